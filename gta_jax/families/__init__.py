"""Model families, chosen by `config.model.family` from this explicit registry (never by string
import). A new family: a module here implementing gta_jax.families.base.Family, and one line below."""
from gta_jax import errors
from gta_jax.families import baseline
from gta_jax.families import dnadet
from gta_jax.families import proposed
from gta_jax.families.base import Family  # noqa: F401  (re-exported)
from gta_jax.families.base import TrainState

FAMILIES = {
    'primary': proposed.Detector,     # phases I/II: the real-vs-fake primary
    'heads': proposed.Heads,          # phases III/IV: one-vs-rest heads on a frozen primary
    'gandct': baseline.GanDctConv,    # baseline gandct-conv
    'postpool': baseline.GanfpPostpool,  # baseline ganfp-postpool
    'dnadet': dnadet.DnaDet,          # baseline DNA-Det (multiclass, crops + contrastive)
}


def build(config, dataset, workdir=None) -> Family:
  """The family named by config.model.family, set up for `dataset` (and `workdir`, whose records
  it checks, e.g. which primary a heads run was built on)."""
  family = FAMILIES.get(config.model.family)
  if family is None:
    raise errors.ConfigError(f'config.model.family={config.model.family!r}: choose one of '
                     f'{", ".join(FAMILIES)}.')
  return family(config, dataset, workdir)
