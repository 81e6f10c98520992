// oneDNN 2-D convolutions (NHWC input/output, HWIO kernel, float32) as XLA FFI handlers for the
// CPU: forward, backward-data and backward-weights (no bias), and an inference forward with bias
// and an optional ReLU post-op; TF 'SAME' padding given as attributes. Built on first use by gta_jax/models/onednn.py (g++, jaxlib's FFI headers, the
// onednn-cpu-gomp wheels); gta_jax/models/convolution.py's conv_impl='onednn' wraps them in a
// custom VJP. Primitives are created once per shape and kept (oneDNN's kernels are JIT-generated
// for this CPU); the kernel is reordered into the primitive's preferred layout on each call.
#include <cstdint>
#include <cstdlib>
#include <new>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

dnnl::engine& Engine() { static dnnl::engine e(dnnl::engine::kind::cpu, 0); return e; }

// Per-thread buffers, grown as needed and kept: a fresh scratchpad per call costs a page fault per
// 4 KiB touched (measured: ~8,000 per primary inference step at batch 64, a third of its time).
// One buffer per slot and thread: XLA may run the same primitive on two threads at once, never
// two calls on one thread.
enum Slot { kScratch = 0, kWeights = 1 };

void* ThreadBuffer(Slot slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    std::free(b.data);
    size_t size = (bytes + 4095) / 4096 * 4096;
    b.data = std::aligned_alloc(64, size);
    if (b.data == nullptr) throw std::bad_alloc();
    b.size = size;
  }
  return b.data;
}

memory Buffered(const memory::desc& md, Slot slot) {
  return memory(md, Engine(), md.get_size() ? ThreadBuffer(slot, md.get_size()) : nullptr);
}

// Each call's scratchpad is the caller's (the thread's buffer), not the primitive's.
dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct Geometry {
  memory::dims src, wei, dst, strides, pad_l, pad_r;
  std::string Key(const char* kind) const {
    std::string k(kind);
    for (auto* v : {&src, &wei, &dst, &strides, &pad_l, &pad_r}) {
      k += '|';
      for (auto d : *v) k += std::to_string(d) + ',';
    }
    return k;
  }
};

// x [B,H,W,C], w [k,k,C,O], y [B,Ho,Wo,O]
Geometry Geo(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
             int64_t stride, int64_t pt, int64_t pl, int64_t pb, int64_t pr) {
  Geometry g;
  g.src = {x[0], x[3], x[1], x[2]};
  g.wei = {w[3], w[2], w[0], w[1]};
  g.dst = {y[0], y[3], y[1], y[2]};
  g.strides = {stride, stride};
  g.pad_l = {pt, pl};
  g.pad_r = {pb, pr};
  return g;
}

dnnl::convolution_forward::primitive_desc FwdPd(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      memory::desc(g.src, dt::f32, tag::nhwc), memory::desc(g.wei, dt::f32, tag::any),
      memory::desc(g.dst, dt::f32, tag::nhwc), g.strides, g.pad_l, g.pad_r, Attr());
}

struct Cached {
  dnnl::primitive prim;
  memory::desc wei_md;      // the primitive's (diff) weights layout
  memory::desc scratch_md;  // its scratchpad
  std::string impl;
};

std::mutex mu;
std::unordered_map<std::string, Cached> cache;

template <typename MakePd>
const Cached& Get(const std::string& key, MakePd make_pd, bool weights_in) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto pd = make_pd();
  Cached c;
  c.prim = dnnl::primitive(pd);
  c.impl = pd.impl_info_str();
  c.wei_md = weights_in ? pd.weights_desc() : pd.diff_weights_desc();
  c.scratch_md = pd.scratchpad_desc();
  return cache.emplace(key, std::move(c)).first->second;
}

memory::desc Hwio(const Geometry& g) { return memory::desc(g.wei, dt::f32, tag::hwio); }

// The kernel as the primitive wants it: the caller's HWIO buffer, or a reordered copy.
memory Weights(const Cached& c, const Geometry& g, dnnl::stream& s, float* hwio) {
  memory user(Hwio(g), Engine(), hwio);
  if (c.wei_md == Hwio(g)) return user;
  memory wei = Buffered(c.wei_md, kWeights);
  dnnl::reorder(user, wei).execute(s, user, wei);
  return wei;
}

// oneDNN reports failures as exceptions; XLA must get an error instead.
template <typename F>
ffi::Error Guarded(F body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
}

}  // namespace

namespace {
// Runs a backward-weights primitive into the caller's HWIO kernel gradient (through a buffer in
// the primitive's layout, reordered back, when it wants another) and, if db, bias gradient.
void KernelGradient(const Cached& c, const Geometry& g, float* x, float* dy, float* dw,
                    float* db) {
  dnnl::stream s(Engine());
  memory user_dw(Hwio(g), Engine(), dw);
  bool reorder = c.wei_md != Hwio(g);
  memory diff_w = reorder ? Buffered(c.wei_md, kWeights) : user_dw;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(memory::desc(g.src, dt::f32, tag::nhwc), Engine(), x)},
      {DNNL_ARG_DIFF_DST, memory(memory::desc(g.dst, dt::f32, tag::nhwc), Engine(), dy)},
      {DNNL_ARG_DIFF_WEIGHTS, diff_w},
      {DNNL_ARG_SCRATCHPAD, Buffered(c.scratch_md, kScratch)}};
  if (db != nullptr) {
    args.emplace(DNNL_ARG_DIFF_BIAS, memory(memory::desc({g.dst[1]}, dt::f32, tag::x), Engine(), db));
  }
  c.prim.execute(s, args);
  if (reorder) dnnl::reorder(diff_w, user_dw).execute(s, diff_w, user_dw);
  s.wait();
}
}  // namespace

ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pt, int64_t pl,
                   int64_t pb, int64_t pr) {
  return Guarded([&] {
    Geometry g = Geo(x.dimensions(), w.dimensions(), y->dimensions(), stride, pt, pl, pb, pr);
    const Cached& c = Get(g.Key("fwd"), [&] { return FwdPd(g); }, true);
    dnnl::stream s(Engine());
    memory src(memory::desc(g.src, dt::f32, tag::nhwc), Engine(), x.typed_data());
    memory dst(memory::desc(g.dst, dt::f32, tag::nhwc), Engine(), y->typed_data());
    memory wei = Weights(c, g, s, w.typed_data());
    memory scratch = Buffered(c.scratch_md, kScratch);
    c.prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst},
                       {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

// Inference: the convolution with its bias and, if `relu`, a ReLU in one primitive (a oneDNN
// post-op), the output written once. The caller folds an inference BatchNorm into w and b.
ffi::Error ConvBiasFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pt, int64_t pl,
                       int64_t pb, int64_t pr, int64_t relu) {
  return Guarded([&] {
    Geometry g = Geo(x.dimensions(), w.dimensions(), y->dimensions(), stride, pt, pl, pb, pr);
    memory::desc bias_md({g.dst[1]}, dt::f32, tag::x);
    const Cached& c = Get(g.Key(relu ? "fwd_bias_relu" : "fwd_bias"), [&] {
      dnnl::primitive_attr attr = Attr();
      if (relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      return dnnl::convolution_forward::primitive_desc(
          Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          memory::desc(g.src, dt::f32, tag::nhwc), memory::desc(g.wei, dt::f32, tag::any),
          bias_md, memory::desc(g.dst, dt::f32, tag::nhwc), g.strides, g.pad_l, g.pad_r, attr);
    }, true);
    dnnl::stream s(Engine());
    memory src(memory::desc(g.src, dt::f32, tag::nhwc), Engine(), x.typed_data());
    memory dst(memory::desc(g.dst, dt::f32, tag::nhwc), Engine(), y->typed_data());
    memory bias(bias_md, Engine(), b.typed_data());
    memory wei = Weights(c, g, s, w.typed_data());
    memory scratch = Buffered(c.scratch_md, kScratch);
    c.prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias},
                       {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pt, int64_t pl,
                       int64_t pb, int64_t pr) {
  return Guarded([&] {
    Geometry g = Geo(dx->dimensions(), w.dimensions(), dy.dimensions(), stride, pt, pl, pb, pr);
    const Cached& c = Get(g.Key("bwd_data"), [&] {
      return dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, memory::desc(g.src, dt::f32, tag::nhwc),
          memory::desc(g.wei, dt::f32, tag::any), memory::desc(g.dst, dt::f32, tag::nhwc),
          g.strides, g.pad_l, g.pad_r, FwdPd(g), Attr());
    }, true);
    dnnl::stream s(Engine());
    memory diff_src(memory::desc(g.src, dt::f32, tag::nhwc), Engine(), dx->typed_data());
    memory diff_dst(memory::desc(g.dst, dt::f32, tag::nhwc), Engine(), dy.typed_data());
    memory wei = Weights(c, g, s, w.typed_data());
    memory scratch = Buffered(c.scratch_md, kScratch);
    c.prim.execute(s, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, wei},
                       {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pt, int64_t pl,
                          int64_t pb, int64_t pr) {
  return Guarded([&] {
    Geometry g = Geo(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pt, pl, pb, pr);
    const Cached& c = Get(g.Key("bwd_weights"), [&] {
      return dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, memory::desc(g.src, dt::f32, tag::nhwc),
          memory::desc(g.wei, dt::f32, tag::any), memory::desc(g.dst, dt::f32, tag::nhwc),
          g.strides, g.pad_l, g.pad_r, FwdPd(g), Attr());
    }, false);
    KernelGradient(c, g, x.typed_data(), dy.typed_data(), dw->typed_data(), nullptr);
  });
}

// The kernel and bias gradients of a convolution with bias, in one primitive.
ffi::Error ConvBwdWeightsBias(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw, ffi::ResultBuffer<ffi::F32> db,
                              int64_t stride, int64_t pt, int64_t pl, int64_t pb, int64_t pr) {
  return Guarded([&] {
    Geometry g = Geo(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pt, pl, pb, pr);
    memory::desc bias_md({g.dst[1]}, dt::f32, tag::x);
    const Cached& c = Get(g.Key("bwd_weights_bias"), [&] {
      auto hint = dnnl::convolution_forward::primitive_desc(
          Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          memory::desc(g.src, dt::f32, tag::nhwc), memory::desc(g.wei, dt::f32, tag::any),
          bias_md, memory::desc(g.dst, dt::f32, tag::nhwc), g.strides, g.pad_l, g.pad_r, Attr());
      return dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, memory::desc(g.src, dt::f32, tag::nhwc),
          memory::desc(g.wei, dt::f32, tag::any), bias_md,
          memory::desc(g.dst, dt::f32, tag::nhwc), g.strides, g.pad_l, g.pad_r, hint, Attr());
    }, false);
    KernelGradient(c, g, x.typed_data(), dy.typed_data(), dw->typed_data(), db->typed_data());
  });
}

// Training BatchNorm with a fused ReLU over NHWC (statistics over N, H, W; biased variance, as
// Flax's). The workspace holds the ReLU's mask for the backward pass.
namespace {
const auto kBnFlags = dnnl::normalization_flags::use_scale |
                          dnnl::normalization_flags::use_shift |
                          dnnl::normalization_flags::fuse_norm_relu;

memory::desc Nhwc(ffi::Span<const int64_t> d) {
  return memory::desc({d[0], d[3], d[1], d[2]}, dt::f32, tag::nhwc);
}

std::string BnKey(const char* kind, ffi::Span<const int64_t> d, float eps) {
  std::string k(kind);
  for (int i = 0; i < 4; ++i) k += '|' + std::to_string(d[i]);
  return k + '|' + std::to_string(eps);
}

dnnl::batch_normalization_forward::primitive_desc BnFwdPd(const memory::desc& md, float eps) {
  return dnnl::batch_normalization_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, md, md, eps, kBnFlags, Attr());
}

std::mutex bn_mu;
struct CachedBn {
  dnnl::primitive prim;
  memory::desc ws_md, scratch_md;
};
std::unordered_map<std::string, CachedBn> bn_cache;

template <typename MakePd>
const CachedBn& GetBn(const std::string& key, MakePd make_pd) {
  std::lock_guard<std::mutex> lock(bn_mu);
  auto it = bn_cache.find(key);
  if (it != bn_cache.end()) return it->second;
  auto pd = make_pd();
  CachedBn c{dnnl::primitive(pd), pd.workspace_desc(), pd.scratchpad_desc()};
  return bn_cache.emplace(key, std::move(c)).first->second;
}
}  // namespace

ffi::Error BnReluFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                     ffi::Buffer<ffi::F32> shift, ffi::ResultBuffer<ffi::F32> y,
                     ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                     ffi::ResultBuffer<ffi::U8> ws, float eps) {
  return Guarded([&] {
    memory::desc md = Nhwc(x.dimensions());
    const CachedBn& c = GetBn(BnKey("bn_fwd", x.dimensions(), eps), [&] { return BnFwdPd(md, eps); });
    dnnl::stream s(Engine());
    memory::desc vec({x.dimensions()[3]}, dt::f32, tag::x);
    memory scratch = Buffered(c.scratch_md, kScratch);
    c.prim.execute(s, {{DNNL_ARG_SRC, memory(md, Engine(), x.typed_data())},
                       {DNNL_ARG_SCALE, memory(vec, Engine(), scale.typed_data())},
                       {DNNL_ARG_SHIFT, memory(vec, Engine(), shift.typed_data())},
                       {DNNL_ARG_DST, memory(md, Engine(), y->typed_data())},
                       {DNNL_ARG_MEAN, memory(vec, Engine(), mean->typed_data())},
                       {DNNL_ARG_VARIANCE, memory(vec, Engine(), var->typed_data())},
                       {DNNL_ARG_WORKSPACE, memory(c.ws_md, Engine(), ws->typed_data())},
                       {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

ffi::Error BnReluBwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                     ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> var,
                     ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::U8> ws,
                     ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale,
                     ffi::ResultBuffer<ffi::F32> dshift, float eps) {
  return Guarded([&] {
    memory::desc md = Nhwc(x.dimensions());
    const CachedBn& c = GetBn(BnKey("bn_bwd", x.dimensions(), eps), [&] {
      return dnnl::batch_normalization_backward::primitive_desc(
          Engine(), dnnl::prop_kind::backward, md, md, md, eps, kBnFlags, BnFwdPd(md, eps), Attr());
    });
    dnnl::stream s(Engine());
    memory::desc vec({x.dimensions()[3]}, dt::f32, tag::x);
    memory scratch = Buffered(c.scratch_md, kScratch);
    c.prim.execute(s, {{DNNL_ARG_SRC, memory(md, Engine(), x.typed_data())},
                       {DNNL_ARG_DIFF_DST, memory(md, Engine(), dy.typed_data())},
                       {DNNL_ARG_MEAN, memory(vec, Engine(), mean.typed_data())},
                       {DNNL_ARG_VARIANCE, memory(vec, Engine(), var.typed_data())},
                       {DNNL_ARG_SCALE, memory(vec, Engine(), scale.typed_data())},
                       {DNNL_ARG_WORKSPACE, memory(c.ws_md, Engine(), ws.typed_data())},
                       {DNNL_ARG_DIFF_SRC, memory(md, Engine(), dx->typed_data())},
                       {DNNL_ARG_DIFF_SCALE, memory(vec, Engine(), dscale->typed_data())},
                       {DNNL_ARG_DIFF_SHIFT, memory(vec, Engine(), dshift->typed_data())},
                       {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

// Bytes of BnReluFwd's workspace for an NHWC shape (the caller allocates it as an output).
extern "C" int64_t GtaDnnlBnWorkspaceBytes(int64_t n, int64_t h, int64_t w, int64_t c,
                                           float eps) {
  try {
    return BnFwdPd(memory::desc({n, c, h, w}, dt::f32, tag::nhwc), eps).workspace_desc().get_size();
  } catch (const std::exception&) {
    return -1;
  }
}

#define F32 ffi::Buffer<ffi::F32>
// The convolution handlers' geometry: stride and TF-SAME padding.
#define GEOMETRY                                                                   \
  .Attr<int64_t>("stride")                                                         \
      .Attr<int64_t>("pad_top")                                                    \
      .Attr<int64_t>("pad_left")                                                   \
      .Attr<int64_t>("pad_bottom")                                                 \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvFwd, ConvFwd,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBwdData, ConvBwdData,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBwdWeights, ConvBwdWeights,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBiasFwd, ConvBiasFwd,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()
                                  GEOMETRY.Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBwdWeightsBias, ConvBwdWeightsBias,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>()
                                  GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlBnReluFwd, BnReluFwd,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>()         // x, scale, shift
                                  .Ret<F32>().Ret<F32>().Ret<F32>()         // y, mean, variance
                                  .Ret<ffi::Buffer<ffi::U8>>()              // workspace
                                  .Attr<float>("epsilon"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlBnReluBwd, BnReluBwd,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>()                    // x, dy
                                  .Arg<F32>().Arg<F32>().Arg<F32>()         // mean, variance, scale
                                  .Arg<ffi::Buffer<ffi::U8>>()              // workspace
                                  .Ret<F32>().Ret<F32>().Ret<F32>()         // dx, dscale, dshift
                                  .Attr<float>("epsilon"));

// One line per primitive created so far: "kind|shapes -> oneDNN implementation".
extern "C" const char* GtaDnnlImpl() {
  std::lock_guard<std::mutex> lock(mu);
  static std::string out;
  out.clear();
  for (auto& [k, v] : cache) out += k + " -> " + v.impl + "\n";
  return out.c_str();
}
