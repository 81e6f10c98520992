// oneDNN 2-D convolutions (NHWC input/output, HWIO kernel, float32, no bias) as XLA FFI
// handlers for the CPU: forward, backward-data and backward-weights, TF 'SAME' padding given as
// attributes. Built on first use by gta_jax/models/onednn.py (g++, jaxlib's FFI headers, the
// onednn-cpu-gomp wheels); gta_jax/models/convolution.py's conv_impl='onednn' wraps them in a
// custom VJP. Primitives are created once per shape and kept (oneDNN's kernels are JIT-generated
// for this CPU); the kernel is reordered into the primitive's preferred layout on each call.
#include <cstdint>
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

// Each call brings its own scratchpad: XLA may run the same primitive on two threads at once.
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
  memory wei(c.wei_md, Engine());
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
    memory scratch(c.scratch_md, Engine());
    c.prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst},
                       {DNNL_ARG_SCRATCHPAD, scratch}});
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
    memory scratch(c.scratch_md, Engine());
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
    dnnl::stream s(Engine());
    memory src(memory::desc(g.src, dt::f32, tag::nhwc), Engine(), x.typed_data());
    memory diff_dst(memory::desc(g.dst, dt::f32, tag::nhwc), Engine(), dy.typed_data());
    memory user_dw(Hwio(g), Engine(), dw->typed_data());
    memory diff_w = user_dw;
    bool reorder = c.wei_md != Hwio(g);
    if (reorder) diff_w = memory(c.wei_md, Engine());
    memory scratch(c.scratch_md, Engine());
    c.prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                       {DNNL_ARG_DIFF_WEIGHTS, diff_w}, {DNNL_ARG_SCRATCHPAD, scratch}});
    if (reorder) dnnl::reorder(diff_w, user_dw).execute(s, diff_w, user_dw);
    s.wait();
  });
}

#define BIND()                                                                     \
  ffi::Ffi::Bind()                                                                 \
      .Arg<ffi::Buffer<ffi::F32>>()                                                \
      .Arg<ffi::Buffer<ffi::F32>>()                                                \
      .Ret<ffi::Buffer<ffi::F32>>()                                                \
      .Attr<int64_t>("stride")                                                     \
      .Attr<int64_t>("pad_top")                                                    \
      .Attr<int64_t>("pad_left")                                                   \
      .Attr<int64_t>("pad_bottom")                                                 \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvFwd, ConvFwd, BIND());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBwdData, ConvBwdData, BIND());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GtaDnnlConvBwdWeights, ConvBwdWeights, BIND());

// One line per primitive created so far: "kind|shapes -> oneDNN implementation".
extern "C" const char* GtaDnnlImpl() {
  std::lock_guard<std::mutex> lock(mu);
  static std::string out;
  out.clear();
  for (auto& [k, v] : cache) out += k + " -> " + v.impl + "\n";
  return out.c_str();
}
