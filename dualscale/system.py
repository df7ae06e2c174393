"""The machine: device choice, synchronisation, threads per worker, allocator and priority.

Every setting that depends on the hardware rather than on the experiment lives here, so the
engine modules stay about the math and a new kind of machine is one place to teach.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto"):
    """auto -> cuda, then mps, then cpu; a device this machine lacks is a ValueError."""
    import torch

    base = name.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available on this machine (no CUDA GPU); use --device cpu")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"bad device {name!r}: {e}")


# The CPU features that numerical kernels (MKL, oneDNN, torch's own) choose their code paths by:
# two runs agree bit for bit only where these, the threads and the software agree.
KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


def machine(device=None) -> dict:
    """What a run was computed on: the CPU's vendor, model name, family/model/stepping and the
    kernel-relevant instruction-set flags (a virtual CPU may name every generation alike, so the
    numbers and flags are what tell two kinds apart), torch's CPU capability, and the GPU's name
    for a CUDA run."""
    import platform

    import torch

    info = {"arch": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        text = open("/proc/cpuinfo").read().split("\n\n")[0]
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key, name in (("vendor_id", "vendor"), ("model name", "cpu"), ("cpu family", "family"), ("model", "model"),
                      ("stepping", "stepping")):
        if key in fields:
            info[name] = fields[key]
    if "cpu" not in info:
        info["cpu"] = platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    info["flags"] = [f for f in KERNEL_FLAGS if f in flags]
    for var in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):  # they pick the numbers' code path
        if os.environ.get(var):
            info[var.lower()] = os.environ[var]
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device) -> None:
    """Wait for the device's queued work (for honest wall-clock timings on a GPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def cores() -> int:
    return os.cpu_count() or 1


def default_jobs(device: str) -> int:
    """Runs at a time in a sweep.

    CPU: one per core (up to 4), each process with one thread: small matmuls scale badly across
    threads, and a thread waiting for a busy core stalls its partners. CUDA: up to 8 processes
    share the GPU. An eager step keeps the GPU busy only 13-27% of the time (launch-bound; on an
    H200 the 12-run reproduce took 80.9 s with 4 at a time, 72.1 s with 8, 74.3 s with 12). With
    the CUDA-graph step one run keeps it busy and the count hardly matters (60.0 s with 8, 62.6 s
    with 4, 61.2 s with 2); 8 still serves the eager --kl-weight runs. MPS: one.
    """
    if device.startswith("cuda"):
        return max(1, min(8, cores() // 2))
    return 1 if device.startswith("mps") else max(1, min(4, cores()))


def dashboard_workers(device: str = "auto", use_env: bool = True) -> int:
    """Runs the dashboard trains at once (the rest queue): DUALSCALE_WORKERS if set; else one per
    GPU where there are GPUs, else all cores but one (the server keeps one). No torch import: the
    GPUs are counted from /dev/nvidia<N> (Linux)."""
    if use_env and os.environ.get("DUALSCALE_WORKERS"):
        try:
            n = int(os.environ["DUALSCALE_WORKERS"])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"DUALSCALE_WORKERS must be a whole number >= 1, got {os.environ['DUALSCALE_WORKERS']!r}")
        return n
    gpus = [d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()] if os.path.isdir("/dev") else []
    if gpus and device.split(":")[0] in ("auto", "cuda"):
        return len(gpus)
    return max(1, cores() - 1)


def threads_per_worker(jobs: int, reserve: int = 0) -> int:
    """torch threads for each of `jobs` workers running at once, leaving `reserve` cores free.

    The one thread policy of every worker: sweeps reserve nothing (two one-thread runs on two
    cores); the dashboard reserves a core for the server, so no torch thread spin-waits for a
    core the server holds (on 2 cores, two threads made training many times slower: measured).
    """
    return max(1, (cores() - reserve) // max(1, jobs))


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of giving them back to the OS (Linux only; idempotent).

    A training step allocates and frees ~20 activations of 128-512 KiB. By default glibc maps each
    such block fresh and unmaps it on free, so every step pays for page faults and zeroed pages
    (2.4 million faults in one `reproduce`; 0.28 million with this). Measured: 4% off the whole
    process of 400 one-thread steps. mallopt(3): M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc, not musl: mallopt takes these options
        libc.mallopt(-3, 32 << 20)  # serve blocks up to 32 MiB (glibc's maximum) from the heap
        libc.mallopt(-1, 1 << 30)   # and give the heap's free top back only past 1 GiB
    except (OSError, AttributeError):
        pass


def lower_priority(pid: int, niceness: int = 10) -> None:
    """Nice a worker so the dashboard server's threads win the cores: the UI stays responsive."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except (AttributeError, OSError):  # not on every platform; a slower UI is no error
        pass


@contextlib.contextmanager
def arithmetic(name: str, device):
    """fp32 (default, untouched), tf32 (CUDA matmuls in TF32) or bf16 (autocast to bfloat16)."""
    if name == "fp32":
        yield
    elif name == "tf32":
        if device.type != "cuda":
            raise ValueError("precision tf32 is a CUDA GPU's; on a CPU use bf16 or fp32")
        import torch

        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        import torch

        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
