"""Writes the hand-built seeds of the `plan` fuzz target.

Usage: python3 fuzz/plan_seeds.py fuzz/corpus/plan

Each seed is named after what it exercises. The encoding mirrors the
decoder in src/fuzzing/plan.rs (`Run::setup`, `Run::decode_options` and the
step functions); change both together. Run a seed with CRASHSAFE_PLAN_LOG=1
to see its steps and system calls.
"""
import struct, os, sys
out = sys.argv[1]
def u16(v): return struct.pack('<H', v & 0xffff)
def head(root=0, no_e=0, no_noreplace=0, no_hardlinks=0, umask=0, three=1):
    return bytes([root | no_e<<1 | no_noreplace<<2 | no_hardlinks<<3 | umask<<4 | three<<6])
def slot(kind, rel=0, other=0, alt=0, len_idx=0, mode_idx=0):
    return bytes([kind | alt<<3 | rel<<6 | other<<7, len_idx | mode_idx<<4])
def opts(consistent=0, nofollow=0, create_new=0, backup=0, unnamed=0, refuse=0, no_owner=0, mode=None):
    b = consistent | nofollow<<1 | (0x1c if create_new else 0) | (0x60 if backup else 0) | unnamed<<7 | (0x300 if refuse else 0) | (0xc00 if no_owner else 0)
    if mode is not None: b |= 0x1000 | mode<<13
    return u16(b)
def write(s, o=None, len_idx=8): return bytes([0, s]) + (o or opts()) + bytes([len_idx])
def stream(s, o=None, actions=(), end=2):
    return bytes([3, s]) + (o or opts()) + bytes([len(actions)]) + b''.join(actions) + bytes([end])
def chunk(len_idx): return bytes([(len_idx << 2) | 1])
def seek(kind, v): return bytes([kind << 2]) + u16(v)
def update(s, o=None, fails=0, len_idx=3): return bytes([5, s]) + (o or opts()) + bytes([0 if fails else 1, len_idx])
def batch(entries, o=None, commit=1): return bytes([6, len(entries)-1]) + (o or opts()) + b''.join(bytes([s, l]) for s, l in entries) + bytes([1 if commit else 0])
def fault_first(kind, errno): return bytes([7, kind<<1 | 1, errno])
def fault_nth(n, errno): return bytes([7, n<<1, errno])
def crash(at, model, seed=0, choice=0): return bytes([8]) + u16(at) + bytes([model]) + u16(seed) + bytes([choice])
def sweep(d): return bytes([9, d])
SYNCFILE, RENAME, RENAME_NR, UNLINK, SYNCDIR, SYNCFS, WRITE = 8, 9, 10, 12, 13, 22, 4
EIO, ENOSPC, EDQUOT, EACCES, EINTR, EPERM, EINVAL = range(7)
CONS, EXT4, EXT4_NOAUTO, KILL = range(4)
# Starting states: a file, a followed symlink into /e, a hard-linked file.
mixed = head() + bytes([7]) + slot(1, len_idx=8, mode_idx=4, other=1) + slot(2, rel=1, len_idx=4) + slot(6, len_idx=2, mode_idx=2)
seeds = {
  'write-new-and-replace': head() + bytes([1]) + slot(1, len_idx=8) + slot(0) + slot(0) + write(0) + write(1, len_idx=0) + write(0, opts(consistent=1), 11),
  'write-as-root-options': head(root=1, umask=1) + bytes([2]) + slot(1, len_idx=5, mode_idx=4, other=1) + slot(2, len_idx=3) + slot(6, len_idx=2, mode_idx=5)
      + write(0, opts(backup=1)) + write(1, opts(nofollow=1)) + write(2, opts(refuse=1)) + write(2, opts(mode=4, no_owner=1)) + write(0, opts(unnamed=1, mode=7)),
  'write-symlinks': head() + bytes([3]) + slot(4, rel=1) + slot(3) + slot(7) + write(0) + write(1, opts(nofollow=1)) + write(2) + write(2, opts(nofollow=1)),
  'write-create-new-link-fallback': head(no_noreplace=1) + bytes([4]) + slot(1) + slot(0) + slot(0) + write(0, opts(create_new=1)) + write(1, opts(create_new=1)) + write(2, opts(create_new=1, unnamed=1)),
  'stream-seeks-commit': mixed + stream(0, actions=[chunk(8), seek(0, 100), chunk(3), seek(1, 0xffff - 49), chunk(11), seek(2, 16), chunk(1)], end=2),
  'stream-discard-and-drop': mixed + stream(1, actions=[chunk(9)], end=0) + stream(2, actions=[chunk(5), seek(2, 0xfff0)], end=1),
  'update-append-and-fail': mixed + update(0) + update(1, opts(backup=1)) + update(2, fails=1),
  'batch-commit-and-drop': mixed + batch([(0, 8), (1, 2), (2, 11)]) + batch([(0, 1), (2, 3)], commit=0),
  'fault-fsync-eio': mixed + fault_first(SYNCFILE, EIO) + write(0) + fault_first(SYNCFS, ENOSPC) + batch([(0, 4), (1, 4)]),
  'fault-dir-fsync-after-rename': mixed + fault_first(SYNCDIR, EIO) + write(1) + crash(0xffff, CONS),
  'fault-cleanup-fails-too': mixed + fault_first(RENAME, EDQUOT) + fault_first(UNLINK, EACCES) + write(0) + sweep(0),
  'fault-eintr-write-retried': mixed + fault_first(WRITE, EINTR) + stream(0, actions=[chunk(9), chunk(9)], end=2),
  'crash-conservative-mid-write': mixed + write(0, opts(consistent=1)) + crash(9, CONS, 3, 1) + write(0) + crash(0xffff, CONS, 5, 2),
  'crash-ext4-then-sweep': mixed + write(1, opts(backup=1)) + crash(11, EXT4, 0, 1) + sweep(0) + write(1),
  'crash-kill9-in-batch': mixed + batch([(0, 6), (1, 7)]) + crash(20, KILL, 0, 0) + sweep(0) + sweep(1),
}
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    open(os.path.join(out, name), 'wb').write(data)
print(len(seeds), 'seeds', sum(len(d) for d in seeds.values()), 'bytes')
