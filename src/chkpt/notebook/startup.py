"""Start-up in a kernel: load chkpt into the IPython shell of `python -m ipykernel_launcher` once
the kernel has made it, as `%load_ext chkpt` would.

Called by the autoload for a kernel process only, while site.py runs, so it imports nothing
Python has not loaded (chkpt.watch's import hook aside): a one-shot import hook waits for
`ipykernel.kernelapp` (every other import costs it one method call), then wraps its
application's `init_extensions` (which runs once the shell exists, after the extensions a user
configured) for one call, and puts the class back as it was. Nothing else of chkpt is imported
before the shell exists, and nothing of this stays behind.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KERNEL_APP_MODULE = "ipykernel.kernelapp"


def load_into_kernel() -> None:
    """Have chkpt loaded into the kernel's shell as soon as there is one."""
    from chkpt.watch import ImportHook

    sys.meta_path.insert(0, ImportHook(KERNEL_APP_MODULE, _kernel_app_imported))


def _kernel_app_imported(module: "Any") -> None:
    try:
        _load_after_extensions(module.IPKernelApp)
    except Exception as exc:  # chkpt must never break the kernel
        from chkpt import guard

        guard.fail(exc, "start-up in a kernel")


def _load_after_extensions(app_class: "Any") -> None:
    """Wrap `app_class.init_extensions` for its one call: the original runs, then chkpt is
    loaded into the shell; the class gets its own attribute back first."""
    own = app_class.__dict__.get("init_extensions")

    def init_extensions(app: "Any") -> None:
        if own is None:
            del app_class.init_extensions
        else:
            app_class.init_extensions = own
        app.init_extensions()
        shell = getattr(app, "shell", None)
        if shell is None:
            return
        try:
            shell.extension_manager.load_extension("chkpt")
        except Exception as exc:  # chkpt must never break the kernel
            from chkpt import guard

            guard.fail(exc, "loading into the kernel")

    app_class.init_extensions = init_extensions
