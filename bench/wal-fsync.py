#!/usr/bin/env python3
"""The cost of one small append + fdatasync, the write-ahead log's unit of durability, three ways:
growing the file (each sync also commits the new size), into fallocate'd space (what the WAL
does: see control-plane/src/raft/wal.rs), and into zero-filled space.

    bench/wal-fsync.py [DIR]   (default: the current directory; use the disk the data dir is on)
"""
import os
import sys
import time

N = 2000
RECORD = b"x" * 300  # about one replicated write


def run(directory, name, prepare):
    path = os.path.join(directory, f".wal-fsync-{name}")
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
    try:
        prepare(fd)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        took = []
        for _ in range(N):
            start = time.perf_counter()
            os.write(fd, RECORD)
            os.fdatasync(fd)
            took.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    print(f"{name:10} p50 {took[N // 2] * 1e6:5.0f} us   p99 {took[N * 99 // 100] * 1e6:5.0f} us")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    print(f"{N} appends of {len(RECORD)} bytes, each followed by fdatasync, in {directory}")
    run(directory, "growing", lambda fd: None)
    run(directory, "fallocate", lambda fd: os.posix_fallocate(fd, 0, 8 << 20))
    run(directory, "zerofill", lambda fd: os.write(fd, b"\0" * (8 << 20)))


if __name__ == "__main__":
    main()
