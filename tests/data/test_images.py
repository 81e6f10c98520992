"""Folder scans: nothing is left out silently."""
import os

import numpy as np
from PIL import Image
import pytest

from gta_jax.data import images


def _png(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def test_links_are_followed_once_and_every_unreadable_entry_is_listed(tmp_path):
  """Was: rglob skipped broken links, looping links and symlinked folders without a word."""
  root = tmp_path / 'photos'
  _png(root / 'a.png')
  _png(root / 'sub' / 'b.png')
  _png(tmp_path / 'elsewhere' / 'c.png')
  (root / 'linked').symlink_to(tmp_path / 'elsewhere')  # a linked folder: followed
  (root / 'again').symlink_to(root / 'sub')  # the same folder twice: listed once
  (root / 'up').symlink_to(root)  # a loop
  (root / 'gone.png').symlink_to(tmp_path / 'missing.png')  # broken
  (root / 'self').symlink_to(root / 'self')  # looping link
  found = images.list_images([root])
  plain = {str(p.relative_to(root)) for p in found if not isinstance(p, images.UnreadableEntry)}
  problems = {p.name: p.problem for p in found if isinstance(p, images.UnreadableEntry)}
  assert plain == {'a.png', 'again/b.png', 'linked/c.png'}  # 'again' sorts before 'sub'
  assert set(problems) == {'up', 'gone.png', 'self'}
  assert 'a broken link' in problems['gone.png'] and 'a looping link' in problems['self']
  assert 'a link back to a folder it is inside of' in problems['up']
  with pytest.raises(images.ImageReadError, match=r'gone.png: a broken link \(to '):
    images.read_rgb(found[[p.name for p in found].index('gone.png')])
  assert [p.parent for p in found if p.name == 'gone.png'] == [root]  # derived paths are plain


def test_a_folder_that_cannot_be_opened_is_listed_as_a_failure(tmp_path, monkeypatch):
  """(Permissions are simulated: the tests may run as root, who reads any folder.)"""
  _png(tmp_path / 'ok.png')
  _png(tmp_path / 'locked' / 'x.png')
  original = os.scandir

  def scandir(path):
    if os.path.basename(path) == 'locked':
      raise PermissionError(13, 'Permission denied')
    return original(path)
  monkeypatch.setattr(images.os, 'scandir', scandir)
  found = images.list_images([tmp_path])
  assert [p.name for p in found] == ['locked', 'ok.png']
  assert 'the folder cannot be read (Permission denied)' in found[0].problem
