"""The plan for the paper's tables, as data: which configs to run, in order, for each table and
which run dirs its `report` command renders (`python -m gta_jax.report RUN... --out tables/<n>`).

docs/paper_tables.md presents the same plan; tests/test_paper_tables.py runs every config here in
`:smoke` on the builders' dummy data, in this order, and renders every table from those runs.
Each config runs after `python -m gta_jax.prepare` of its dataset; each phase finds the run it
builds on under `runs/`."""
import typing


class Table(typing.NamedTuple):
  name: str                    # the paper's table, e.g. '1a detection, GANFP pixel'
  configs: tuple[str, ...]     # 'configs/<file>.py[:variant]', in the order to run them
  runs: tuple[str, ...]        # the run dir each config writes, in the same order (report's input)
  out: str                     # report's --out folder


TABLES = (
    Table('1a detection, GANFP pixel',
          configs=(
              'configs/phase1_ganfp.py',
              'configs/phase2_ganfp.py',
              'configs/phase2_ganfp.py:jpeg',
              'configs/phase2_ganfp.py:crop',
              'configs/baseline_gandct.py',
              'configs/baseline_gandct.py:multi',
              'configs/baseline_postpool.py',
              'configs/baseline_postpool.py:multi',),
          runs=(
              'runs/phase1_ganfp',
              'runs/phase2_ganfp',
              'runs/phase2_ganfp_jpeg',
              'runs/phase2_ganfp_crop',
              'runs/gandct_detection',
              'runs/gandct_detection_multi',
              'runs/postpool_detection',
              'runs/postpool_detection_multi',),
          out='tables/1a'),
    Table('1b detection, GANFP DCT',
          configs=(
              'configs/phase1_ganfp_dct.py',
              'configs/phase2_ganfp_dct.py',
              'configs/phase2_ganfp_dct.py:jpeg',
              'configs/phase2_ganfp_dct.py:crop',),
          runs=(
              'runs/phase1_ganfp_dct',
              'runs/phase2_ganfp_dct',
              'runs/phase2_ganfp_dct_jpeg',
              'runs/phase2_ganfp_dct_crop',),
          out='tables/1b'),
    Table('1c detection, FacesHQ+',
          configs=(
              'configs/phase1_faceshq.py',
              'configs/phase2_faceshq.py',
              'configs/phase2_faceshq.py:jpeg',
              'configs/phase2_faceshq.py:crop',),
          runs=(
              'runs/phase1_faceshq',
              'runs/phase2_faceshq',
              'runs/phase2_faceshq_jpeg',
              'runs/phase2_faceshq_crop',),
          out='tables/1c'),
    Table('2a attribution, GANFP pixel',
          configs=(
              'configs/phase3_progan.py',
              'configs/phase4_progan.py',
              'configs/phase3_cramergan.py',
              'configs/phase4_cramergan.py',
              'configs/baseline_gandct.py:progan',
              'configs/baseline_gandct.py:progan,multi',
              'configs/baseline_gandct.py:cramergan',
              'configs/baseline_gandct.py:cramergan,multi',
              'configs/baseline_postpool.py:progan',
              'configs/baseline_postpool.py:progan,multi',
              'configs/baseline_postpool.py:cramergan',
              'configs/baseline_postpool.py:cramergan,multi',),
          runs=(
              'runs/phase3_progan',
              'runs/phase4_progan',
              'runs/phase3_cramergan',
              'runs/phase4_cramergan',
              'runs/gandct_progan',
              'runs/gandct_progan_multi',
              'runs/gandct_cramergan',
              'runs/gandct_cramergan_multi',
              'runs/postpool_progan',
              'runs/postpool_progan_multi',
              'runs/postpool_cramergan',
              'runs/postpool_cramergan_multi',),
          out='tables/2a'),
    Table('2b attribution, GANFP DCT',
          configs=(
              'configs/phase3_progan_dct.py',
              'configs/phase4_progan_dct.py',
              'configs/phase3_cramergan_dct.py',
              'configs/phase4_cramergan_dct.py',),
          runs=(
              'runs/phase3_progan_dct',
              'runs/phase4_progan_dct',
              'runs/phase3_cramergan_dct',
              'runs/phase4_cramergan_dct',),
          out='tables/2b'),
    Table('2c attribution, FacesHQ+',
          configs=(
              'configs/phase3_faceshq.py',
              'configs/phase4_faceshq.py',),
          runs=(
              'runs/phase3_faceshq',
              'runs/phase4_faceshq',),
          out='tables/2c'),
    Table('3a-c heads on the jpeg / crop primaries',
          configs=(
              'configs/phase3_progan.py:jpeg',
              'configs/phase3_progan.py:crop',
              'configs/phase3_cramergan.py:jpeg',
              'configs/phase3_cramergan.py:crop',
              'configs/phase3_progan_dct.py:jpeg',
              'configs/phase3_progan_dct.py:crop',
              'configs/phase3_faceshq.py:jpeg',
              'configs/phase3_faceshq.py:crop',),
          runs=(
              'runs/phase3_progan_jpeg',
              'runs/phase3_progan_crop',
              'runs/phase3_cramergan_jpeg',
              'runs/phase3_cramergan_crop',
              'runs/phase3_progan_dct_jpeg',
              'runs/phase3_progan_dct_crop',
              'runs/phase3_faceshq_jpeg',
              'runs/phase3_faceshq_crop',),
          out='tables/3'),
    Table('4 multiclass, GANFP',
          configs=(
              'configs/phase3_ganfp_all.py',
              'configs/phase4_ganfp_all.py',
              'configs/baseline_gandct.py:multiclass',
              'configs/baseline_gandct.py:multiclass,multi',
              'configs/baseline_postpool.py:multiclass',
              'configs/baseline_postpool.py:multiclass,multi',),
          runs=(
              'runs/phase3_ganfp_all',
              'runs/phase4_ganfp_all',
              'runs/gandct_multiclass',
              'runs/gandct_multiclass_multi',
              'runs/postpool_multiclass',
              'runs/postpool_multiclass_multi',),
          out='tables/4'),
)


def report_command(table: Table) -> str:
  """The command that renders `table` from its runs."""
  return ' '.join(('python -m gta_jax.report',) + table.runs + ('--out', table.out))
