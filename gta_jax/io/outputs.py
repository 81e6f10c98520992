"""Where the tools write: one guard for every file or folder a user names as an output, and the
writes themselves.

A tool may replace only what is recognisably its own earlier output, so that a mistyped path costs
a rerun, never a model, a run's results or a user's file:
  - a JSON file is the tool's own when it is an object whose "written_by" is "gta_jax.<tool>"
    (`mark`; attribute's records, a list, are under "records"). `payload` reads either form, so
    outputs written before the mark still read;
  - a file in an output folder (attribute's --cam-dir, report's --out) is the tool's own where
    the folder's manifest (a JSON file in it, marked the same way) lists it, or where it is a JSON
    output of the tool: the manifest is written before the files it lists, so an interrupted run
    leaves nothing that the next one takes for a stranger's.
Everything is checked before any work (before a model loads or an image is scored):
  - refused always: a folder named for a file (and a file for a folder), a place that cannot be
    written, a target inside a model, run or input the command reads (RUN/model/model.json and
    RUN/results/metrics.json are never a --json output), a file that exists and is not JSON (an
    image whose name a shell glob put after --json);
  - refused unless --overwrite: an existing JSON file, or files in an output folder, that the tool
    did not write.
Every write goes through a temporary file beside the target and an atomic rename: a reader never
sees half a file, and an interrupted write leaves the old one whole.
"""
import contextlib
import json
import os
import pathlib
import shutil
import tempfile

from gta_jax import errors

MARK = 'written_by'
RECORDS = 'records'  # where a list output (attribute's records) sits in its marked object


def tag(tool: str) -> str:
  return f'gta_jax.{tool}'


def mark(tool: str, value):
  """What `tool` writes as JSON: `value` (a dict) with "written_by" first, or a list under
  "records"."""
  if isinstance(value, dict):
    return {MARK: tag(tool), **{k: v for k, v in value.items() if k != MARK}}
  return {MARK: tag(tool), RECORDS: value}


def is_own(value, tool: str) -> bool:
  return isinstance(value, dict) and value.get(MARK) == tag(tool)


def _written_before_the_mark(value, tool: str) -> bool:
  """Outputs of the versions before the mark, recognised by their shape so that the first rerun
  after an upgrade needs no --overwrite: attribute's list of per-file records, heldout's
  summary, an overlay (`*_cam.png`, checked by name in check_folder)."""
  if tool == 'attribute':
    return isinstance(value, list) and bool(value) and all(
        isinstance(r, dict) and 'path' in r and ('verdict' in r or 'error' in r) for r in value)
  if tool == 'heldout':
    return isinstance(value, dict) and MARK not in value and 'failed' in value and (
        'summary' in value or 'over_models' in value)
  return False


def is_own_output(value, tool: str) -> bool:
  """A JSON output of `tool`: marked as its own, or of its shape before the mark existed."""
  return is_own(value, tool) or _written_before_the_mark(value, tool)


def payload(value):
  """A tool's JSON output as the tool built it: the records list, or the object without its mark.
  Unmarked outputs (written before the mark) are returned as they are."""
  if not isinstance(value, dict) or MARK not in value:
    return value
  rest = {k: v for k, v in value.items() if k != MARK}
  return rest[RECORDS] if list(rest) == [RECORDS] and isinstance(rest[RECORDS], list) else rest


def load(path):
  """payload() of a JSON output file."""
  return payload(json.loads(pathlib.Path(path).read_text()))


@contextlib.contextmanager
def staged(path):
  """Yields a temporary path beside `path` to write; renamed onto `path` (atomically) when the
  block ends, removed if it raises. Writers that infer a format from the name must be told it."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  staging = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    yield staging
    os.replace(staging, path)
  finally:
    staging.unlink(missing_ok=True)


def write_json(path, value, tool: str | None = None) -> None:
  """Strict JSON through a temporary file and an atomic rename; marked as `tool`'s when given."""
  with staged(path) as staging:
    staging.write_text(json.dumps(value if tool is None else mark(tool, value), indent=2,
                                  allow_nan=False) + '\n')


def replace_folder(new, target) -> None:
  """Moves the folder `new` to `target`; an old target is moved aside first (to a fresh name) and
  removed only once the new one is in place."""
  new, target = pathlib.Path(new), pathlib.Path(target)
  if not target.exists():
    new.rename(target)
    return
  aside = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.replaced-', dir=target.parent))
  aside.rmdir()
  target.rename(aside)
  new.rename(target)
  shutil.rmtree(aside, ignore_errors=True)


# ------------------------------------------------------------------------------------ the guard


def _forms(path) -> set[str]:
  path = pathlib.Path(path)
  return {os.path.abspath(path), os.path.realpath(path)}


def within(path, area) -> bool:
  """`path` is `area` or lies under it (as written or with links resolved)."""
  return any(p == a or p.startswith(a.rstrip(os.sep) + os.sep)
             for p in _forms(path) for a in _forms(area))


def check_not_inside(target, read, flag: str) -> None:
  """Refuses an output inside anything the command reads (whatever --overwrite says): for a model
  or run, the area composition.read_area gives."""
  for area in read:
    if area is not None and within(target, area):
      where = 'is' if _forms(target) & _forms(area) else 'is inside'
      raise errors.UsageError(
          f'{flag} {target} {where} {area}, which this command reads (a model, run or input): '
          'its files are never an output. Write it elsewhere.')


def check_file(path, *, tool: str, flag: str = '--json', overwrite: bool = False,
               read=()) -> pathlib.Path:
  """A JSON output `path` of `tool`: refused, before any work, where it is a folder, lies inside
  what the command reads (`read`: composition.read_area of its models, its input files), exists
  and is not JSON, exists and is not the tool's own earlier output (unless `overwrite`), or
  cannot be written."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise errors.UsageError(f'{flag} {path} is a folder; name a file.')
  check_not_inside(path, read, flag)
  if path.exists():
    try:
      text = path.read_text()
      value = json.loads(text) if text.strip() else None
    except (OSError, UnicodeDecodeError, ValueError):
      raise errors.UsageError(
          f'{flag} {path} exists and is not a JSON file; refusing to overwrite it, even with '
          '--overwrite (put image files after "--" if one is named like a flag; remove the file '
          'yourself if it is to go).') from None
    if value is not None and not is_own_output(value, tool) and not overwrite:
      raise errors.UsageError(
          f'{flag} {path} exists and was not written by {tool} (it has no "{MARK}": '
          f'"{tag(tool)}"); refusing to overwrite it. Name a new file, or pass --overwrite to '
          'replace it.')
  errors.check_writable_folder(path.parent if str(path.parent) else '.', flag)
  if path.exists() and not os.access(path, os.W_OK):
    raise errors.UsageError(f'{flag} {path} is not writable.')
  return path


def _plain(name) -> bool:
  """A relative path inside the folder: no leading /, no '..'."""
  return (isinstance(name, str) and bool(name) and not name.startswith('/')
          and '..' not in pathlib.PurePosixPath(name).parts)


def _is_own_file(path: pathlib.Path, tool: str) -> bool:
  """A JSON output of `tool` (e.g. attribute's records kept beside its overlays)."""
  try:
    return is_own_output(json.loads(path.read_text()), tool)
  except (OSError, UnicodeDecodeError, ValueError):
    return False


def _old_overlay(path: pathlib.Path) -> bool:
  """An overlay attribute wrote before its cam dirs had a manifest: a PNG named *_cam.png."""
  try:
    with open(path, 'rb') as f:
      return path.name.endswith('_cam.png') and f.read(8) == b'\x89PNG\r\n\x1a\n'
  except OSError:
    return False


def _is_file(path: pathlib.Path) -> bool:
  return path.is_symlink() or path.is_file()


def _files_under(folder: pathlib.Path) -> list[str]:
  """The folder's files, less hidden ones (.DS_Store, .ipynb_checkpoints/, staging leftovers):
  a file manager or notebook that opened the outputs does not make them someone else's."""
  names = (p.relative_to(folder).as_posix() for p in folder.rglob('*') if _is_file(p))
  return sorted(name for name in names
                if not any(part.startswith('.') for part in name.split('/')))


class Folder:
  """An output folder that check_folder passed. Each file is listed in the manifest before it is
  written (atomically), so a rerun knows it as the tool's own; a name written twice in one run
  gets a -2, -3 before its suffix, so no file of this run replaces another."""

  def __init__(self, path: pathlib.Path, tool: str, manifest: str, earlier: dict):
    self.path, self.tool, self.manifest = path, tool, manifest
    self.earlier = earlier  # {name: source} of the files an earlier run listed
    self.files: dict = {}  # this run's
    self.extra: dict = {}  # more keys for the manifest (report's runs)

  def unique(self, name: str) -> str:
    stem, dot, suffix = name.rpartition('.')
    candidate, n = name, 1
    while candidate in self.files:
      n += 1
      candidate = f'{stem}-{n}.{suffix}' if dot else f'{name}-{n}'
    return candidate

  def plan(self, files: dict) -> None:
    """Lists `files` ({name: what it shows}) in the manifest, with every file listed before."""
    self.files.update(files)
    write_json(self.path / self.manifest,
               {**self.extra, 'files': {**self.earlier, **self.files}}, self.tool)

  @contextlib.contextmanager
  def writing(self, name: str, source=None):
    """Yields the temporary path to write file `name` (made unique in this run) to."""
    name = self.unique(name)
    self.plan({name: source})
    with staged(self.path / name) as staging:
      yield staging

  def remove_stale(self) -> list[str]:
    """Removes the files an earlier run of the tool listed that this run did not write (a report
    is replaced whole); returns their names."""
    stale = [name for name in self.earlier if name not in self.files]
    for name in stale:
      if _is_file(self.path / name):
        (self.path / name).unlink()
    self.earlier = {}
    self.plan({})
    return stale


def check_folder(folder, *, tool: str, flag: str, manifest: str, overwrite: bool = False,
                 read=(), holding=(), ignore=()) -> Folder:
  """An output folder of `tool`: refused, before any work, where it is a file, lies inside what
  the command reads (`read`), is or contains one of `holding` (input folders), or cannot be
  written; and, unless `overwrite`, where it holds files that the tool's manifest does not list
  (`ignore`: other outputs of this run, checked on their own). Created if new."""
  folder = pathlib.Path(folder)
  if folder.exists() and not folder.is_dir():
    raise errors.UsageError(f'{flag} {folder} is a file; name a folder.')
  for held in holding:
    if within(held, folder):
      raise errors.UsageError(
          f'{flag} {folder} is or holds {held}, an input of this command; its files would be '
          'replaced or mixed with the outputs. Name another folder.')
  check_not_inside(folder, read, flag)
  earlier = {}
  if folder.is_dir():
    try:
      record = json.loads((folder / manifest).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
      record = None
    own = is_own(record, tool) and isinstance(record.get('files'), dict)
    # Files still there (one listed by an interrupted run may never have been written); never
    # outside the folder, whatever a hand-edited manifest says.
    earlier = {name: source for name, source in (record['files'] if own else {}).items()
               if _plain(name) and _is_file(folder / name)}
    ignored = {pathlib.Path(os.path.relpath(p, folder)).as_posix() for p in ignore
               if p is not None and within(p, folder)}
    if own:  # a manifest not the tool's own is someone's file like any other
      ignored.add(manifest)
    others = [f for f in _files_under(folder) if f not in earlier and f not in ignored
              and not (f.endswith('.json') and _is_own_file(folder / f, tool))
              and not (tool == 'attribute' and _old_overlay(folder / f))]
    if others and not overwrite:
      shown = ', '.join(others[:5]) + (f' and {len(others) - 5} more' if len(others) > 5 else '')
      raise errors.UsageError(
          f'{flag} {folder} holds files {tool} did not write ({shown}); refusing to write among '
          'them. Name a new or empty folder, or pass --overwrite to write beside them (a file of '
          'the same name as an output is then replaced).')
  errors.check_writable_folder(folder, flag)
  return Folder(folder, tool, manifest, earlier)
