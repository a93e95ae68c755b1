"""A traced script gives the same exit status, stdout, stderr and written files as with CHKPT=0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHKPT, PYTHON, chkpt_json, run, write

# A few hundred KB of data in the globals, so that every checkpoint has something to save, and
# a busy loop on the clock during which periodic checkpoints are due.
PRELUDE = """\
import numpy as np, time
block = np.arange(50_000.0)
def busy(seconds=0.3):
    start = time.time()
    while time.time() - start < seconds:
        pass
"""

# The prelude of the cases that must checkpoint: busy() also goes on until the run's own store
# (one per traced run) holds a committed manifest, which before the script ends can only be a
# periodic checkpoint's (bounded: 60 s). No timer is raced, and with CHKPT=0 it returns at
# once. Either way it calls the same functions (a profiler the script runs sees the same), and
# checkpointed() calls nothing but os.scandir (comprehensions are inlined) in both.
WAITING_PRELUDE = """\
import numpy as np, os, time
block = np.arange(50_000.0)
TRACED = os.environ.get("CHKPT") != "0"
RUNS = os.path.join(os.environ["CHKPT_DIR"], "runs")
def checkpointed():
    try:
        found = [entry for run in os.scandir(RUNS) for entry in os.scandir(run.path + "/checkpoints")]
    except OSError:
        found = []
    return not TRACED or found != []
def busy(seconds=0.3):
    start = time.time()
    while time.time() - start < seconds or not checkpointed() and time.time() - start < 60:
        pass
"""

CSV = """\
import csv
f = open("out.csv", "w")
writer = csv.writer(f)
for i in range(60):
    writer.writerow([i, i * i, "row %d" % i])
busy()
"""

# The work done in a module of the user's beside the script (which writes it first): its
# function's locals are in every checkpoint, its unclosed file must still be flushed at exit.
USER_MODULE = (
    "with open('userlib.py', 'w') as source:\n"
    "    source.write('import csv\\n'\n"
    "                 'def export(rows, fail, wait):\\n'\n"
    "                 '    f = open(\"out.csv\", \"w\")\\n'\n"
    "                 '    writer = csv.writer(f)\\n'\n"
    "                 '    table = [[i, i * i] for i in range(rows)]\\n'\n"
    "                 '    writer.writerows(table)\\n'\n"
    "                 '    wait()\\n'\n"
    "                 '    if fail:\\n'\n"
    "                 '        raise ValueError(\"bad row\")\\n'\n"
    "                 '    return f\\n')\n"
    "import userlib\n"
)

# Classes whose every hook notes that it ran (and some print): a checkpoint must never call one.
# A finalizer prints what ran when the interpreter clears the script's globals, after the exit
# checkpoint.
HOOKS = """\
import sys
RAN = []

class Report:
    def __del__(self, ran=RAN, print=print):
        print('hooks that ran:', sorted(set(ran)))

report = Report()

class Printing:
    def __init__(self):
        self.values = block
    def __getstate__(self):
        print('getstate ran')
        return self.__dict__

class Stripping:
    def __init__(self):
        self.values = block
        self.cache = {'kept': 1}
    def __getstate__(self):
        state = self.__dict__
        state.pop('cache')
        return state

class Counted:
    def __init__(self):
        self.values = block
    def __reduce__(self):
        RAN.append('__reduce__')
        return (Counted, ())
    def __reduce_ex__(self, protocol):
        RAN.append('__reduce_ex__')
        return (Counted, ())
    def __getattr__(self, name):
        RAN.append('__getattr__ ' + name)
        raise AttributeError(name)

class Logged:
    def __init__(self, target):
        object.__setattr__(self, 'target', target)
    def __getattribute__(self, name):
        RAN.append('__getattribute__ ' + name)
        return object.__getattribute__(self, name)

class Props:
    def __init__(self):
        self.values = block
    for _name in ('shape', 'dtype', 'dtypes', 'nbytes', 'base', 'index', 'memory_usage', 'estimated_size',
                  'element_size', 'nelement', 'get_total_buffer_size', 'data', '__dict__', '__class__'):
        locals()[_name] = property(lambda self, _name=_name: RAN.append(_name) or 0)

class SizeRaises:
    def __init__(self):
        self.values = block
    def __sizeof__(self):
        RAN.append('__sizeof__')
        raise RuntimeError('no size')

class SizeNegative:
    def __init__(self):
        self.values = block
    def __sizeof__(self):
        RAN.append('__sizeof__ -1')
        return -1

class RaisingList(list):
    def __len__(self):
        RAN.append('__len__')
        raise RuntimeError('no len')
    def __iter__(self):
        RAN.append('__iter__')
        raise RuntimeError('no iter')

class CountingDict(dict):
    def keys(self):
        RAN.append('keys')
        return dict.keys(self)
    def values(self):
        RAN.append('values')
        return dict.values(self)
    def items(self):
        RAN.append('items')
        return dict.items(self)
    def __iter__(self):
        RAN.append('dict __iter__')
        return dict.__iter__(self)
    def __len__(self):
        RAN.append('dict __len__')
        return dict.__len__(self)

class Meta(type):
    def __getattribute__(cls, name):
        if not name.startswith('__'):
            RAN.append('metaclass ' + name)
        return type.__getattribute__(cls, name)
    def __getattr__(cls, name):
        RAN.append('metaclass __getattr__ ' + name)
        raise AttributeError(name)

class WithMeta(metaclass=Meta):
    def __init__(self):
        self.values = block

class Slotted:
    __slots__ = ('values', 'count')
    def __init__(self):
        self.values = block
        self.count = 3
    def __getattribute__(self, name):
        RAN.append('slots __getattribute__ ' + name)
        return object.__getattribute__(self, name)

class Key:
    def __init__(self, n):
        self.n = n
    def __hash__(self):
        RAN.append('__hash__')
        return self.n
    def __eq__(self, other):
        RAN.append('__eq__')
        return self is other
    def __repr__(self):
        RAN.append('__repr__')
        return 'Key()'
"""

CASES = {
    # -- file buffering and finalizers -----------------------------------------------------
    "csv_unclosed_normal_exit": CSV,
    "csv_unclosed_sys_exit_0": CSV + "import sys\nsys.exit(0)\n",
    "csv_unclosed_sys_exit_3": CSV + "import sys\nsys.exit(3)\n",
    "csv_unclosed_uncaught": CSV + "raise ValueError('bad row')\n",
    "csv_unclosed_keyboard_interrupt": CSV + "raise KeyboardInterrupt\n",
    "csv_unclosed_raise_system_exit": CSV + "raise SystemExit(2)\n",
    "csv_unclosed_in_user_module": USER_MODULE + "kept = userlib.export(60, False, busy)\n",
    "csv_unclosed_in_user_module_uncaught": USER_MODULE + "userlib.export(60, True, busy)\n",
    "binary_unclosed": (
        "out = open('out.bin', 'wb')\nout.write(bytes(range(256)) * 20)\nbusy()\n"
    ),
    "binary_unclosed_keyboard_interrupt": (
        "out = open('out.bin', 'wb')\nout.write(bytes(range(256)) * 20)\nbusy()\n"
        "raise KeyboardInterrupt\n"
    ),
    "textiowrapper_over_bufferedwriter": (
        "import io\nraw = io.FileIO('wrapped.txt', 'w')\n"
        "text = io.TextIOWrapper(io.BufferedWriter(raw), encoding='utf-8')\n"
        "text.write('héllo\\n' * 300)\nbusy()\n"
    ),
    "textiowrapper_uncaught": (
        "import io\nraw = io.FileIO('wrapped.txt', 'w')\n"
        "text = io.TextIOWrapper(io.BufferedWriter(raw), encoding='utf-8')\n"
        "text.write('héllo\\n' * 300)\nbusy()\n1 / 0\n"
    ),
    "stdout_redirected_to_file": (
        "import sys\nsys.stdout = open('log.txt', 'w')\nprint('to the log')\nbusy()\n"
        "raise KeyboardInterrupt\n"
    ),
    "print_to_unclosed_file": (
        "report = open('report.txt', 'w')\nfor i in range(40):\n    print('line', i, file=report)\n"
        "busy()\nimport sys\nsys.exit(3)\n"
    ),
    "gzip_unclosed": (
        "import gzip\nz = gzip.GzipFile('out.gz', 'wb', mtime=0)\nz.write(b'packed\\n' * 100)\n"
        "busy()\n"
    ),
    "del_prints_and_writes": (
        "class Noisy:\n"
        "    def __del__(self, open=open, print=print):\n"
        "        print('del ran')\n"
        "        with open('del.txt', 'w') as handle:\n"
        "            handle.write('deleted\\n')\n"
        "keep = Noisy()\nbusy()\n"
    ),
    "del_after_sys_exit_3": (
        "import sys\nclass Noisy:\n"
        "    def __del__(self, print=print):\n"
        "        print('del ran')\n"
        "keep = Noisy()\nbusy()\nsys.exit(3)\n"
    ),
    "del_after_keyboard_interrupt": (
        "class Noisy:\n"
        "    def __del__(self, print=print):\n"
        "        print('del ran')\n"
        "keep = Noisy()\nbusy()\nraise KeyboardInterrupt\n"
    ),
    "weakref_finalize": (
        "import weakref\nclass Thing:\n    pass\nthing = Thing()\n"
        "weakref.finalize(thing, print, 'finalized thing')\n"
        "weakref.finalize(block, print, 'finalized block')\nbusy()\n"
    ),
    "weakref_finalize_on_crash": (
        "import weakref\nclass Thing:\n    pass\nthing = Thing()\n"
        "weakref.finalize(thing, print, 'finalized thing')\nbusy()\nraise RuntimeError('x')\n"
    ),
    "finalizers_vs_atexit_order": (
        "import atexit, weakref\n"
        "class Noisy:\n"
        "    def __del__(self, print=print):\n"
        "        print('del')\n"
        "class Thing:\n    pass\n"
        "atexit.register(print, 'atexit first registered')\n"
        "thing = Thing()\nweakref.finalize(thing, print, 'finalize')\n"
        "keep = Noisy()\n"
        "atexit.register(print, 'atexit last registered')\nbusy()\n"
    ),
    "atexit_writes_file_after_crash": (
        "import atexit\n"
        "def save():\n"
        "    with open('atexit.txt', 'w') as handle:\n"
        "        handle.write('saved\\n')\n"
        "atexit.register(save)\nbusy()\nraise KeyboardInterrupt\n"
    ),
    # -- sys.exit forms -----------------------------------------------------------------------
    "exit_no_args": "import sys\nbusy(0.1)\nsys.exit()\n",
    "exit_none": "import sys\nbusy(0.1)\nsys.exit(None)\n",
    "exit_0": "import sys\nbusy(0.1)\nsys.exit(0)\n",
    "exit_3": "import sys\nbusy(0.1)\nsys.exit(3)\n",
    "exit_message": "import sys\nbusy(0.1)\nsys.exit('fatal: no input')\n",
    "exit_status_keyword": "import sys\nbusy(0.1)\nsys.exit(status=3)\n",
    "exit_two_args": "import sys\nbusy(0.1)\nsys.exit(1, 2)\n",
    "exit_in_function": (
        "import sys\ndef finish(code):\n    sys.exit(code)\nbusy(0.1)\nfinish(6)\n"
    ),
    "exit_in_try_finally": (
        "import sys\nbusy(0.1)\ntry:\n    sys.exit(7)\nfinally:\n    print('finally ran')\n"
    ),
    "exit_caught_and_printed": (
        "import sys, traceback\nbusy(0.1)\n"
        "try:\n    sys.exit(8)\nexcept SystemExit:\n    traceback.print_exc()\n"
        "print('still here')\n"
    ),
    "exit_caught_traceback_in_function": (
        "import sys, traceback\n"
        "def leave():\n    sys.exit('leaving')\n"
        "busy(0.1)\n"
        "try:\n    leave()\nexcept SystemExit as exc:\n"
        "    print(type(exc).__name__, exc.code)\n    traceback.print_exc()\n"
    ),
    "raise_system_exit_4": "busy(0.1)\nraise SystemExit(4)\n",
    # chkpt's sys.exit is a function that only notes the status (the FAQ says so): its type and
    # repr differ from the builtin's, its names, doc, calls, errors and tracebacks do not
    "exit_names": (
        "import sys\nprint(sys.exit.__name__, sys.exit.__qualname__, sys.exit.__module__)\n"
        "print(sys.exit.__doc__ == sys.__dict__['exit'].__doc__)\nbusy(0.1)\n"
    ),
    "exit_from_thread": (
        "import sys, threading\n"
        "t = threading.Thread(target=sys.exit, args=(5,))\nt.start()\nt.join()\n"
        "busy(0.1)\nprint('main goes on')\n"
    ),
    "exit_from_thread_then_exit_0": (
        "import sys, threading\n"
        "t = threading.Thread(target=sys.exit, args=(5,))\nt.start()\nt.join()\n"
        "busy(0.1)\nprint('main goes on')\nraise SystemExit(0)\n"
    ),
    # -- signals --------------------------------------------------------------------------------
    "sigrtmax_user_handler": (
        "import signal\ncalls = []\n"
        "signal.signal(signal.SIGRTMAX, lambda signum, frame: calls.append(signum))\n"
        "busy(0.5)\nprint('SIGRTMAX handler calls:', len(calls))\n"
    ),
    "sigrtmax_getsignal": (
        "import signal\nprint(signal.getsignal(signal.SIGRTMAX))\nbusy(0.3)\n"
        "print(signal.getsignal(signal.SIGRTMAX), signal.getsignal(signal.SIGINT))\n"
    ),
    "wakeup_fd_socketpair": (
        "import signal, socket\n"
        "a, b = socket.socketpair()\na.setblocking(False)\nb.setblocking(False)\n"
        "print(signal.set_wakeup_fd(a.fileno()))\nbusy(0.5)\n"
        "try:\n    got = b.recv(4096)\nexcept BlockingIOError:\n    got = b''\n"
        "print('wakeup bytes:', list(got))\n"
    ),
    "wakeup_fd_pipe": (
        "import os, signal\n"
        "r, w = os.pipe()\nos.set_blocking(r, False)\nos.set_blocking(w, False)\n"
        "signal.set_wakeup_fd(w)\nbusy(0.5)\n"
        "try:\n    got = os.read(r, 4096)\nexcept BlockingIOError:\n    got = b''\n"
        "print('wakeup bytes:', list(got))\n"
    ),
    "sigmask_then_sigpending": (
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\nbusy(0.3)\n"
        "print(sorted(signal.sigpending()))\n"
        "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))\n"
    ),
    "sigmask_untouched": (
        "import signal\nprint(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))\nbusy(0.3)\n"
        "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), sorted(signal.sigpending()))\n"
    ),
    "sigusr1_user_handler": (
        "import os, signal\nhits = []\n"
        "signal.signal(signal.SIGUSR1, lambda signum, frame: hits.append(signum))\n"
        "busy(0.2)\nos.kill(os.getpid(), signal.SIGUSR1)\nbusy(0.2)\n"
        "print('SIGUSR1 hits:', hits)\n"
    ),
    "setitimer_sigalrm": (
        "import signal\nhits = []\n"
        "signal.signal(signal.SIGALRM, lambda signum, frame: hits.append(signum))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.1)\nstart = time.time()\n"
        "while not hits and time.time() - start < 10:\n    pass\n"
        "busy(0.2)\nprint('SIGALRM hits:', len(hits), signal.getitimer(signal.ITIMER_REAL))\n"
    ),
    "alarm": (
        "import signal\nprint(signal.alarm(5))\nbusy(0.2)\nprint(signal.alarm(0) in (4, 5))\n"
        "print(signal.getitimer(signal.ITIMER_REAL))\n"
    ),
    "sigrtmax_sent_for_real": (
        "import os, signal\ncalls = []\n"
        "signal.signal(signal.SIGRTMAX, lambda signum, frame: calls.append(signum))\n"
        "busy(0.2)\nos.kill(os.getpid(), signal.SIGRTMAX)\nbusy(0.2)\n"
        "print('SIGRTMAX handler calls:', len(calls))\n"
    ),
    "sigrtmax_ignored": (
        "import signal\nsignal.signal(signal.SIGRTMAX, signal.SIG_IGN)\nbusy(0.3)\n"
        "print(signal.getsignal(signal.SIGRTMAX))\n"
    ),
    "user_excepthook": (
        "import sys\n"
        "def hook(kind, value, tb):\n    print('custom hook:', kind.__name__, value, file=sys.stderr)\n"
        "sys.excepthook = hook\nbusy(0.2)\nraise ValueError('handled by the hook')\n"
    ),
    "user_threading_excepthook": (
        "import threading\n"
        "threading.excepthook = lambda args: print('thread hook:', args.exc_type.__name__)\n"
        "def work():\n    raise RuntimeError('worker')\n"
        "t = threading.Thread(target=work)\nt.start()\nt.join()\nbusy(0.2)\nprint('main')\n"
    ),
    "settrace_line_count": (
        "import sys\nlines = []\n"
        "def tracer(frame, event, arg):\n"
        "    if frame.f_code.co_name == 'work':\n"
        "        if event == 'line':\n            lines.append(frame.f_lineno)\n"
        "        return tracer\n    return None\n"
        "def work(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
        "sys.settrace(tracer)\ncalls = 0\nstart = time.time()\n"
        "while time.time() - start < 0.3:\n    work(3)\n    calls += 1\n"
        "sys.settrace(None)\nprint(len(lines) % calls, len(lines) // calls)\n"
    ),
    "register_at_fork_order": (
        "import os\n"
        "def in_child():\n    with open('child.txt', 'a') as handle:\n        handle.write('child hook\\n')\n"
        "os.register_at_fork(before=lambda: print('before', flush=True),\n"
        "                    after_in_parent=lambda: print('parent', flush=True),\n"
        "                    after_in_child=in_child)\n"
        "busy(0.2)\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('done')\n"
    ),
    "sys_exit_inside_atexit": (
        "import atexit, sys\natexit.register(sys.exit, 5)\nbusy(0.2)\nprint('body')\n"
    ),
    "sigint_mid_loop": (
        "import os, signal\nstart = time.time()\ni = 0\n"
        "while True:\n    i += 1\n"
        "    if time.time() - start > 0.3:\n        os.kill(os.getpid(), signal.SIGINT)\n"
    ),
    "sigint_mid_loop_in_function": (
        "import os, signal\n"
        "def loop():\n    start = time.time()\n"
        "    while True:\n"
        "        if time.time() - start > 0.3:\n            os.kill(os.getpid(), signal.SIGINT)\n"
        "print('start', flush=True)\nloop()\n"
    ),
    # -- other tools of sys.monitoring ----------------------------------------------------
    "monitoring_tool_ids_claimed_by_a_function_at_the_start": (
        "import sys\ndef claim():\n    for i in range(6):\n        sys.monitoring.use_tool_id(i, 'mine')\n"
        "claim()\nbusy(0.3)\nprint([sys.monitoring.get_tool(i) for i in range(6)])\n"
    ),
    "monitoring_use_every_tool_id": (
        "import sys\nmon = sys.monitoring\n"
        "def grab(when):\n"
        "    for i in range(6):\n"
        "        try:\n            mon.use_tool_id(i, 'x')\n            print(when, i, 'ok')\n"
        "        except ValueError as exc:\n            print(when, i, exc)\n"
        "    for i in range(6):\n        if mon.get_tool(i) == 'x':\n            mon.free_tool_id(i)\n"
        "grab('start')\nbusy(0.5)\ngrab('later')\n"
    ),
    "monitoring_hold_every_tool_id": (
        "import sys\nmon = sys.monitoring\n"
        "for i in range(6):\n    mon.use_tool_id(i, 'mine')\n"
        "busy(0.5)\nprint([mon.get_tool(i) for i in range(6)])\n"
    ),
    "monitoring_get_tool": (
        "import sys\nmon = sys.monitoring\n"
        "print([mon.get_tool(i) for i in range(6)])\nbusy(0.25)\n"
        "print([mon.get_tool(i) for i in range(6)])\nbusy(0.25)\n"
        "print([mon.get_tool(i) for i in range(6)])\n"
    ),
    "monitoring_line_callback_counts": (
        "import sys\nmon = sys.monitoring\nmon.use_tool_id(0, 'counter')\nevents = []\n"
        "mon.register_callback(0, mon.events.LINE, lambda code, line: events.append(line))\n"
        "def work(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
        "mon.set_local_events(0, work.__code__, mon.events.LINE)\n"
        "work(3)\nper_call = len(events)\ncalls = 1\nstart = time.time()\n"
        "while time.time() - start < 0.4:\n    work(3)\n    calls += 1\n"
        "print(per_call, len(events) == per_call * calls)\n"
        "print(mon.get_local_events(0, work.__code__) == mon.events.LINE)\n"
    ),
    "monitoring_disable_stays_disabled": (
        "import sys\nmon = sys.monitoring\nmon.use_tool_id(0, 'once')\nevents = []\n"
        "def once(code, line):\n    events.append(line)\n    return mon.DISABLE\n"
        "mon.register_callback(0, mon.events.LINE, once)\n"
        "def work(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
        "mon.set_local_events(0, work.__code__, mon.events.LINE)\n"
        "start = time.time()\nwhile time.time() - start < 0.4:\n    work(3)\n"
        "print(sorted(set(events)) == sorted(events), len(events))\n"
    ),
    # -- warnings as errors and fork -----------------------------------------------------
    "fork_with_user_thread": (
        "import os, threading\nev = threading.Event()\n"
        # a daemon: on 3.15 -W error::DeprecationWarning makes fork() raise, and the script ends
        "t = threading.Thread(target=ev.wait, daemon=True)\nt.start()\nbusy(0.2)\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
        "print(os.waitpid(pid, 0)[1])\nev.set()\nt.join()\nprint('done')\n"
    ),
    "fork_without_user_thread": (
        "import os\nbusy(0.2)\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
        "print(os.waitpid(pid, 0)[1])\nprint('done')\n"
    ),
    "warning_filters_around_fork": (
        "import os, warnings\nprint(len(warnings.filters))\nprint(warnings.filters)\nbusy(0.2)\n"
        "print(len(warnings.filters))\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
        "print(len(warnings.filters))\nprint(warnings.filters)\n"
    ),
    "fork_right_after_a_large_checkpoint": (
        "import os, chkpt\nbig = np.random.default_rng(0).random(12_000_000)\n"  # hashed by several threads
        "chkpt.snapshot('big')\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
        "print(os.waitpid(pid, 0)[1])\nprint('done')\n"
    ),
    "multiprocessing_fork_pool": (
        "import multiprocessing as mp\n"
        "def square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n    busy(0.2)\n"
        "    with mp.get_context('fork').Pool(2) as pool:\n"
        "        print(pool.map(square, range(8)))\n"
    ),
    # -- the program's own code never runs at a checkpoint: its hooks print, count, strip, raise
    "hooks_getstate_prints": HOOKS + "obj = Printing()\nbusy()\n",
    "hooks_getstate_strips_its_object": HOOKS + "obj = Stripping()\nbusy()\nprint(obj.cache)\n",
    "hooks_reduce_and_getattr_count": HOOKS + "obj = Counted()\nnested = {'obj': Counted(), 'data': block}\nbusy()\n",
    "hooks_logging_proxy": HOOKS + "proxy = Logged(block)\nitems = [Logged(i) for i in range(3)]\nbusy()\n",
    "hooks_properties": HOOKS + "obj = Props()\nbusy()\n",
    "hooks_magicmock": (
        "from unittest.mock import MagicMock\nm = MagicMock()\nm.data = block\nkept = {'m': m, 'block': block}\n"
        "busy()\nprint(m.mock_calls)\n"
    ),
    "hooks_sizeof_raises_and_negative": HOOKS + "a = SizeRaises()\nb = SizeNegative()\nbusy()\n",
    "hooks_list_subclass_len_raises": HOOKS + "items = RaisingList([block, 'x' * 2000])\nbusy()\n",
    "hooks_dict_subclass_methods": HOOKS + "table = CountingDict(a=block, b=Counted())\nbusy()\n",
    "hooks_metaclass_getattribute": HOOKS + "obj = WithMeta()\nbusy()\n",
    "hooks_slotted_getattribute": HOOKS + "obj = Slotted()\nbusy()\n",
    "hooks_eq_hash_repr_of_keys": HOOKS + "table = {Key(i): block for i in range(3)}\nbusy()\n",
    "hooks_exception_str_prints": (
        HOOKS + "busy()\nclass Loud(ValueError):\n"
        "    def __str__(self):\n        print('str ran')\n        return 'loud'\nraise Loud('x')\n"
    ),
    "hooks_exception_str_raises": (
        HOOKS + "busy()\nclass Broken(ValueError):\n"
        "    def __str__(self):\n        raise RuntimeError('no text')\nraise Broken('x')\n"
    ),
    # -- nothing else of chkpt's shows either
    "repl_shows_a_keyboard_interrupt": (
        "import code\nbusy(0.2)\ncode.InteractiveInterpreter(locals=globals()).runsource('raise KeyboardInterrupt')\n"
        "busy(0.1)\nprint('after')\n"
    ),
    "repl_shows_a_value_error": (
        "import code\nbusy(0.2)\ncode.InteractiveInterpreter(locals=globals()).runsource('raise ValueError(1)')\n"
        "print('after')\n"
    ),
    "repl_own_namespace_keyboard_interrupt": (
        "import code\nbusy(0.2)\ncode.InteractiveInterpreter().runsource('raise KeyboardInterrupt')\nprint('after')\n"
    ),
    "locals_dict_held_by_the_program": (
        "import chkpt\n"
        "def work():\n    x = 1\n    snap = locals()\n    x = 2\n    y = block\n    busy(0.3)\n"
        "    chkpt.snapshot('in work')\n    return snap.get('x'), sorted(snap)\n"
        "print(work())\n"
    ),
    "polars_lazyframe_global": (
        "import polars as pl\nlazy = pl.DataFrame({'a': list(range(5000))}).lazy().filter(pl.col('a') > 3)\n"
        "frames = {'lazy': lazy, 'block': block}\nbusy()\n"
    ),
    "cprofile_sees_only_the_program": (
        "import cProfile, pstats\n"
        "def work():\n    busy(0.4)\n"
        "profile = cProfile.Profile()\nprofile.enable()\nwork()\nprofile.disable()\n"
        "print(sorted({f'{name[0].rsplit(chr(47), 1)[-1]}:{name[2]}' for name in pstats.Stats(profile).stats}))\n"
    ),
    "monitoring_tool_sees_only_the_program": (
        "import sys\nmon = sys.monitoring\nmon.use_tool_id(0, 'mine')\nseen = set()\n"
        "def started(code, offset):\n    seen.add(code.co_filename)\n"
        "def called(code, offset, callee, arg):\n    seen.add(getattr(callee, '__name__', '') or '')\n"
        "mon.register_callback(0, mon.events.PY_START, started)\n"
        "mon.register_callback(0, mon.events.CALL, called)\n"
        "mon.set_events(0, mon.events.PY_START | mon.events.CALL)\n"
        "busy(0.5)\nmon.set_events(0, 0)\n"
        "print(sorted(name for name in seen if 'chkpt' in name or 'PyThreadState' in name or 'unseen' in name))\n"
    ),
}


# (case, extra interpreter options) pairs; each case runs under -W error::DeprecationWarning too
# where that matters.
WARNING_CASES = ["fork_with_user_thread", "fork_without_user_thread", "warning_filters_around_fork",
                 "multiprocessing_fork_pool", "fork_right_after_a_large_checkpoint"]
PARAMS = [(name, ()) for name in sorted(CASES)] + [
    (name, ("-W", "error::DeprecationWarning")) for name in WARNING_CASES]


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file the script wrote in its working directory, by relative name."""
    found = {}
    for base, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = Path(base, name)
            relative = str(path.relative_to(directory))
            if relative != "prog.py":
                found[relative] = path.read_bytes()
    return found


# the store of each traced run of three_ways (autoloaded, explicit), below the test's tmp_path
STORES = ("store-b", "store-c")


def three_ways(source, env, tmp_path, options=(), together=False):
    """The outcome with CHKPT=0, autoloaded, and in explicit mode (`python -m chkpt`): exit
    status, stdout, stderr (process ids masked) and the files written, each run in a fresh
    empty directory whose name differs from the others' only in its last letter (put back the
    same in all, as tracebacks show it). `together` runs the three at once: only for cases
    that need no periodic checkpoint in their short run (on two cores a traced run then waits).
    Each traced run has a store of its own (STORES), which WAITING_PRELUDE's busy() looks in."""
    traced = {letter: dict(env, CHKPT_INTERVAL="0.05", CHKPT_DIR=str(tmp_path / store))
              for letter, store in zip("bc", STORES, strict=True)}
    ways = {"a": (["prog.py"], dict(env, CHKPT="0")), "b": (["prog.py"], traced["b"]),
            "c": (["-m", "chkpt", "prog.py"], traced["c"])}

    def start(letter: str) -> tuple[Path, subprocess.Popen]:
        args, way_env = ways[letter]
        directory = tmp_path / f"cwd-{letter}"
        directory.mkdir()
        write(directory, "prog.py", source)
        return directory, subprocess.Popen([PYTHON, *options, *args], env=way_env, cwd=directory,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)

    def finish(directory: Path, process: subprocess.Popen) -> tuple:
        stdout, stderr = process.communicate(timeout=120)
        same = str(tmp_path / "cwd-x")
        stdout, stderr = (text.replace(str(directory), same) for text in (stdout, stderr))
        # pids, and addresses (3.14's gzip names its __del__ "at 0x…", different in each process)
        stderr = re.sub(r" at 0x[0-9a-f]+", " at 0x…", re.sub(r"pid=\d+", "pid=N", stderr))
        return process.returncode, stdout, stderr, files_of(directory)

    if together:
        plain, autoloaded, explicitly = (finish(*started) for started in [start(w) for w in "abc"])
        return plain, autoloaded, explicitly
    return finish(*start("a")), finish(*start("b")), finish(*start("c"))


# Cases where nothing stands in chkpt's way: both traced runs must have taken periodic
# checkpoints while the files were open (parity by switching chkpt off does not count).
CHECKPOINTED = ("csv_", "binary_", "textiowrapper", "gzip", "print_to", "stdout_redirected",
                "del_", "weakref", "finalizers", "hooks_", "polars_", "cprofile_", "monitoring_tool_sees")


def periodic_checkpoints(tmp_path: Path) -> list[int]:
    """For each run in the traced runs' stores, how many periodic checkpoints it committed."""
    counts = []
    for store in STORES:
        for run_dir in sorted((tmp_path / store / "runs").iterdir()):
            manifests = [json.loads(p.read_text()) for p in (run_dir / "checkpoints").glob("*.json")]
            counts.append(sum(m.get("trigger") == "periodic" for m in manifests))
    return counts


@pytest.mark.parametrize(("name", "options"), PARAMS,
                         ids=[n + ("-Werror" if o else "") for n, o in PARAMS])
def test_same_outcome_and_files_as_plain_python(name, options, env, tmp_path):
    must_checkpoint = name.startswith(CHECKPOINTED)
    prelude = WAITING_PRELUDE if must_checkpoint else PRELUDE
    plain, autoloaded, explicitly = three_ways(prelude + CASES[name], env, tmp_path, options,
                                               together=not must_checkpoint)
    assert autoloaded == plain
    assert explicitly == plain
    if must_checkpoint:
        counts = periodic_checkpoints(tmp_path)
        assert len(counts) == 2 and min(counts) >= 1, counts


def test_sigint_exit_status_and_traceback(env, tmp_path):
    plain, autoloaded, explicitly = three_ways(PRELUDE + CASES["sigint_mid_loop"], env, tmp_path)
    assert plain[0] == -2 and "KeyboardInterrupt" in plain[2]
    assert autoloaded == plain
    assert explicitly == plain


def test_plain_python_facts_the_corpus_relies_on(env, tmp_path):
    """The cases above are meaningful: plain Python writes the files and gives these errors."""
    def plain(name: str) -> tuple:
        directory = tmp_path / name
        directory.mkdir()
        write(directory, "prog.py", PRELUDE + CASES[name])
        result = run([PYTHON, "prog.py"], dict(env, CHKPT="0"), directory)
        return result.returncode, result.stdout, result.stderr, files_of(directory)

    interrupted = plain("csv_unclosed_keyboard_interrupt")
    assert interrupted[0] == -2 and interrupted[3]["out.csv"].count(b"\n") == 60
    two_args = plain("exit_two_args")
    assert two_args[0] == 1 and "TypeError: exit expected at most 1 argument" in two_args[2]
    assert plain("sigrtmax_user_handler")[1] == "SIGRTMAX handler calls: 0\n"
    deleted = plain("del_prints_and_writes")
    assert deleted[1] == "del ran\n" and deleted[3] == {"del.txt": b"deleted\n"}


# -- coverage.py -----------------------------------------------------------------------------

COVERED = PRELUDE + """\
def used(x):
    if x > 2:
        return x * 2
    return x

def unused():
    return 1

print(sum(used(i) for i in range(5)))
busy(0.4)
"""


@pytest.mark.parametrize("core", ["default", "sysmon"])
def test_coverage_run_and_report_are_unchanged(core, env, tmp_path):
    if subprocess.run([PYTHON, "-c", "import coverage"], capture_output=True).returncode:
        pytest.skip("coverage is not installed in this venv (pip install coverage)")
    if core == "sysmon":
        env = dict(env, COVERAGE_CORE="sysmon")
    results = []
    for label, extra in (("plain", {"CHKPT": "0"}), ("traced", {"CHKPT_INTERVAL": "0.05"})):
        directory = tmp_path / label
        directory.mkdir()
        write(directory, "prog.py", COVERED)
        ran = run([PYTHON, "-m", "coverage", "run", "prog.py"], dict(env, **extra), directory)
        report = run([PYTHON, "-m", "coverage", "report", "-m"], dict(env, **extra), directory)
        results.append((ran.returncode, ran.stdout, ran.stderr, report.returncode, report.stdout))
    assert results[1] == results[0]
    assert "prog.py" in results[0][4]


# -- the program's pickling hooks never run, in any checkpoint, and its objects are saved -----

HOOKED = """\
import glob, json, os, sys, time, numpy as np, chkpt

def note(what):
    with open("hooks.log", "a") as handle:
        handle.write(what + "\\n")

class Reduced:
    def __init__(self, tag, size=30_000):
        self.tag = tag
        self.weights = np.arange(float(size))
    def __reduce__(self):
        note("reduce " + self.tag)
        return (Reduced, (self.tag,))

class Stateful:
    def __init__(self, tag):
        self.tag = tag
        self.weights = np.arange(30_000.0)
    def __getstate__(self):
        note("getstate " + self.tag)
        return self.__dict__

def periodic_checkpoints():
    found = 0
    for path in glob.glob(os.path.join(os.environ["CHKPT_DIR"], "runs", "*", "checkpoints", "*.json")):
        with open(path) as handle:
            found += json.load(handle).get("trigger") == "periodic"
    return found

PLACEMENTS
for i in range(int(sys.argv[1])):
    chkpt.snapshot("s%d" % i)
if len(sys.argv) > 2:  # then periodic checkpoints, and a crash
    start = time.time()  # until a periodic checkpoint has saved it too (a loaded machine is slow)
    while time.time() - start < 60 and not periodic_checkpoints():
        time.sleep(0.01)
    raise RuntimeError("end")
"""

# placement: (the statement that makes the object, the object's saved name)
PLACEMENTS = {
    "reduce_global": ("obj = Reduced('obj')", "obj"),
    "reduce_in_dict": ("box = {'arr': np.arange(40_000.0), 'obj': Reduced('obj')}", "box['obj']"),
    "getstate_global": ("obj = Stateful('obj')", "obj"),
    "getstate_in_dict": ("box = {'arr': np.arange(40_000.0), 'obj': Stateful('obj')}",
                         "box['obj']"),
    "reduce_as_attribute": ("class Model:\n    pass\nmodel = Model()\n"
                            "model.weights = np.arange(40_000.0)\nmodel.obj = Reduced('obj')",
                            "model.obj"),
    "reduce_in_a_long_list": ("items = [Reduced(str(i), 3_000) for i in range(1500)]", "items"),  # 36 MB
}


def holds(checkpoint: dict, path: str) -> bool:
    """Whether the checkpoint saved the object at `path` (itself, or parts of it by name)."""
    return any(v["name"] == path or v["name"].startswith((path + ".", path + "["))
               for v in checkpoint["variables"])


@pytest.mark.parametrize("periodic", [False, True], ids=["snapshots", "snapshots_periodic_crash"])
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_pickling_hooks_never_run_and_the_object_is_saved_by_every_checkpoint(placement, periodic, env, work):
    statement, path = PLACEMENTS[placement]
    write(work, "prog.py", HOOKED.replace("PLACEMENTS", statement))
    args, interval = (["prog.py", "4", "crash"], "0.05") if periodic else (["prog.py", "4"], "1h")
    result = run([PYTHON, *args], dict(env, CHKPT_INTERVAL=interval), work)
    assert result.returncode == (1 if periodic else 0), result.stderr
    shown = chkpt_json(["show", "latest"], env, work)
    holding = [c for c in shown["checkpoints"] if holds(c, path)]
    assert len(holding) == len(shown["checkpoints"]) >= 4 + periodic  # the snapshots, the periodic one, the end
    if periodic:
        assert {"periodic", "crash"} <= {c["trigger"] for c in holding}
    assert not (work / "hooks.log").exists()  # no hook ran: not at a snapshot, a periodic checkpoint, a crash
    item = "[7]" if placement.endswith("list") else ""  # loads elsewhere as a stand-in with its attributes
    write(work, "load.py", f"import chkpt\nprint(float(chkpt.load({path!r}){item}.weights.sum()))\n")
    loaded = run([PYTHON, "load.py"], dict(env, CHKPT="0"), work)
    assert loaded.stdout == f"{float(sum(range(3_000 if item else 30_000)))}\n", loaded.stderr
    assert not (work / "hooks.log").exists()


# -- how a run ended: what the script died of, decided where it died --------------------------

ENDINGS = {
    # a REPL the script runs shows (and sets sys.last_exc for) exceptions it caught itself
    "repl_value_error": (
        "import code\ncode.InteractiveInterpreter(locals=globals()).runsource('raise ValueError(1)')\n", 0, "finished"),
    "repl_keyboard_interrupt": ("import code\ncode.InteractiveInterpreter().runsource('raise KeyboardInterrupt')\n",
                                0, "finished"),
    "uncaught": ("def f():\n    raise ValueError('bad row')\nf()\n", 1, "crashed"),
    "reraised_after_logging": ("try:\n    1 / 0\nexcept ZeroDivisionError:\n    print('logged')\n    raise\n",
                               1, "crashed"),
    "raised_in_exec_of_the_script": ("exec('raise KeyError(3)')\n", 1, "crashed"),
    "keyboard_interrupt": ("raise KeyboardInterrupt\n", -2, "interrupted"),
    "exception_whose_str_raises": (
        "class Broken(ValueError):\n    def __str__(self):\n        raise RuntimeError('no text')\n"
        "raise Broken('bad row')\n", 1, "crashed"),
}


@pytest.mark.parametrize("name", sorted(ENDINGS))
def test_the_run_records_how_the_script_ended(name, env, work):
    source, status, ended = ENDINGS[name]
    write(work, "prog.py", PRELUDE + source)
    # started by python, runpy, chkpt's runner, and the runner from chkpt's console script (whose
    # exit status after Ctrl-C is its own up to 3.13: 1, where python dies of SIGINT; from 3.14
    # the console script's sys.exit(1) dies of SIGINT too)
    console_sigint = 1 if sys.version_info < (3, 14) else -2
    for args in ([PYTHON, "prog.py"], [PYTHON, "-m", "prog"], [PYTHON, "-m", "chkpt", "prog.py"],
                 [CHKPT, "run", "prog.py"]):
        result = run(args, env, work)
        assert result.returncode == (console_sigint if args[0] == CHKPT and status == -2 else status), result.stderr
    records = chkpt_json(["ls"], env, work)
    assert [r["status"] for r in records] == [ended] * 4
    if ended == "crashed":  # the crash checkpoint is there, the exception named without running its code
        last = chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]
        assert last["trigger"] == "crash" and last["exception"].split(":")[0] in (
            "ValueError", "ZeroDivisionError", "KeyError", "Broken")


@pytest.mark.parametrize("interval", ["1e10", "inf"])
def test_an_interval_too_large_for_a_timeout_is_waited_as_long_as_the_system_allows(interval, env, work):
    """`interval = 1e10` or `inf`: no OverflowError from chkpt's thread (the value is refused by
    the config's range check, and the timer's wait is clamped where it is used). The script waits
    until the timer thread, after its first tick (5 s), waits for what that tick said, then a
    moment more."""
    write(work, "chkpt.toml", f"interval = {interval}\n")
    write(work, "prog.py", PRELUDE + (
        "import sys, time\n"
        "def waiting():\n"
        "    return any(frame.f_code.co_name == '_tick' and frame.f_locals.get('wait') not in (None, 5.0)\n"
        "               for frame in sys._current_frames().values())\n"
        "start = time.time()\n"
        "while not waiting() and time.time() - start < 30:\n"
        "    time.sleep(0.05)\n"
        "time.sleep(0.3)\nprint('ticked', waiting())\n"))
    result = run([PYTHON, "prog.py", interval], env, work)
    assert (result.returncode, result.stdout) == (0, "ticked True\n"), result.stderr
    # nothing but chkpt's own one-line notes (a range check of the value may refuse it)
    assert all(line.startswith("chkpt: ") for line in result.stderr.splitlines()), result.stderr
