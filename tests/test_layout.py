"""The package's shape: imports run one way (tools -> trainer/evaluation -> the rest), with no
cycle, module-level or deferred, and no library module imports a tool."""
import ast
import pathlib

from conftest import ROOT

PACKAGE = ROOT / 'gta_jax'
# `python -m gta_jax.<tool>` aliases of gta_jax/tools/<tool>.py: entry points, imported by nobody.
ALIASES = {'attribute', 'crosstest', 'evaluate', 'heldout', 'keras_import', 'model', 'openset', 'prepare',
           'report', 'sweep', 'verify', 'audit'}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict[str, set[str]]:
  """gta_jax module -> the gta_jax modules it imports anywhere in its body (deferred included)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        imported |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        imported |= {f'{node.module}.{a.name}' for a in node.names} | {node.module}
    graph[name] = {m for m in imported if m in modules and m != name}
  return graph


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  # A package's __init__ importing its own modules is not a cycle of the code's roles.
  edges = {m: {n for n in deps if not (m.count('.') and n.startswith(m + '.'))}
           for m, deps in graph.items()}
  assert _cycle(edges) is None, ' -> '.join(_cycle(edges))


def test_the_cycle_check_finds_a_deferred_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_library_module_imports_a_tool_and_tools_import_no_alias():
  graph = import_graph()
  library = {m for m in graph if not m.startswith('gta_jax.tools')
             and m.split('.')[-1] not in ALIASES | {'gta_jax'}}
  for module in sorted(library):
    tools = sorted(m for m in graph[module] if m.startswith('gta_jax.tools'))
    assert not tools, f'{module} imports {tools}'
  for module, deps in graph.items():
    aliases = sorted(d for d in deps if d.count('.') == 1 and d.split('.')[1] in ALIASES)
    assert not aliases, f'{module} imports the alias module(s) {aliases}'


def test_no_module_edits_sys_path():
  for path in list(PACKAGE.rglob('*.py')) + list((ROOT / 'benchmarks').glob('*.py')) + [
      ROOT / 'launch.py'] + list((ROOT / 'datasets').rglob('*.py')):
    assert 'sys.path.insert' not in path.read_text() and 'sys.path.append' not in path.read_text(), path
