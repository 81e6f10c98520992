"""Long loops say they are alive: periodic log lines with the count, rate and time left."""
from gta_jax.io import progress


def test_progress_passes_items_through_and_logs_count_rate_and_time_left(capsys):
  assert list(progress.progress(iter(range(4)), total=4, desc='scoring', unit='batches',
                                every_s=0, terminal=False)) == [0, 1, 2, 3]
  lines = [l for l in capsys.readouterr().out.splitlines() if 'scoring' in l]
  assert len(lines) == 4
  assert 'scoring: 1/4 batches (' in lines[0] and 'batches/s' in lines[0] and 'left)' in lines[0]
  assert 'scoring: 4/4 batches' in lines[-1]


def test_progress_stays_quiet_between_periods_and_without_a_total(capsys):
  assert list(progress.progress([1, 2, 3], desc='quiet', every_s=3600, terminal=False)) == [1, 2, 3]
  assert 'quiet' not in capsys.readouterr().out
  list(progress.progress(iter('ab'), desc='open', every_s=0, terminal=False))
  out = capsys.readouterr().out
  assert 'open: 2 it (' in out and 'left' not in out
