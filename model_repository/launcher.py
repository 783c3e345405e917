"""Run the real `tritonserver` binary shipped in the nvidia-pytriton wheel on a model repository.

The Python backend is prepared in a writable work directory (`backends/python` = the wheel's backend plus the
stub built for this interpreter's Python version), and the server's environment is set so that the stub embeds
*this* interpreter: the interpreter's `bin` is first on PATH (the embedded Python finds `pyvenv.cfg` there, so
`sys.prefix` is our venv and its site-packages, editable installs included, are importable) and the
interpreter's own `libpython` comes first on LD_LIBRARY_PATH when it has one (sysconfig's LIBDIR, else
`sys.base_prefix/lib`: standalone builds such as uv's report a LIBDIR of the machine they were built on).
The stub's interpreter ignores PYTHONPATH, and its path ends with the backend folder: the launcher links
`hpsv3_serve` and `hpsv3_repository` (the packages the models import) there, so a source checkout that is
not installed serves too; an installed copy comes first.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hpsv3_serve
from hpsv3_serve.errors import HPSv3Error
from hpsv3_serve.network import LOOPBACK_ADDRESS, is_loopback

from . import allocator as allocators
from .admin import ADMIN_HEADER, admin_headers, new_admin_key, restriction_arguments

LOG_TAIL_LINES = 40
_ERROR_LINE = re.compile(r"^E\d{4} ")  # glog error lines: E1128 00:21:01.565005 ...
_CPU_NOISE = ("CudaDriverHelper has not been initialized",)  # logged as an error on every machine without CUDA
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own server: never via a proxy
_STUB = "triton_python_backend_stub"
# With an allocator preloaded into tritonserver, the backend runs this in the stub's place: the stub then starts
# with the LD_PRELOAD it would have had (the Python models keep glibc's malloc, measured flat under load), under
# its own name (the watchdog finds stubs by it).
_STUB_LAUNCHER = f"""#!/bin/bash
if [ -n "${{HPSV3_STUB_LD_PRELOAD:-}}" ]; then export LD_PRELOAD="$HPSV3_STUB_LD_PRELOAD"; else unset LD_PRELOAD; fi
exec -a "$0" "${{0%/*}}/{_STUB}.bin" "$@"
"""


class ServerStartError(HPSv3Error):
    """tritonserver could not be started; the message says why (with the end of its log when it ran)."""

    code = "server_start"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (for tests; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    try:
        with socket.create_server((host, port), family=family):
            return False
    except OSError:
        return True


def _pytriton_paths() -> tuple[Path, Path]:
    """(pytriton/tritonserver, nvidia_pytriton.libs) of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.origin:
        raise ServerStartError(
            "nvidia-pytriton is not installed; install the serving extras: pip install -e '.[serve]'"
        )
    package = Path(spec.origin).parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def _check_numpy() -> None:
    version = importlib.metadata.version("numpy")
    if int(version.split(".")[0]) >= 2:
        raise ServerStartError(
            f"numpy {version} is installed, but the Triton Python-backend stub is built against numpy 1.x "
            "(with numpy 2 it misreads every tensor, and a BYTES input kills it); install 'numpy<2'"
        )


def _libpython_dir() -> Path | None:
    """The folder holding this interpreter's shared libpython, if it has one."""
    soname = sysconfig.get_config_var("INSTSONAME")
    if not soname or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    folders = (sysconfig.get_config_var("LIBDIR"), Path(sys.base_prefix) / "lib")
    return next((Path(folder) for folder in folders if folder and (Path(folder) / soname).is_file()), None)


def _prepend(path: str | os.PathLike, current: str | None) -> str:
    return os.fspath(path) + (os.pathsep + current if current else "")


@dataclass(frozen=True)
class GrpcTls:
    """TLS for the gRPC endpoint: the server's PEM certificate and key; with `client_ca`, clients must present
    a certificate signed by it (mutual TLS; readiness is then checked over HTTP)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def arguments(self) -> list[str]:
        for path in filter(None, (self.cert, self.key, self.client_ca)):
            if not Path(path).is_file():
                raise ServerStartError(f"TLS file {path} does not exist")
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.client_ca is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.client_ca}"]
        return args


class TritonServer:
    """One tritonserver process serving `model_repository`, bound to `host` (loopback by default).

    Ports set to None are disabled (gRPC cannot be). With gRPC TLS on, HTTP and metrics (plain text) bind loopback
    unless `http_address` / `metrics_address` name another address. The model-control, shared-memory,
    trace and logging APIs need the header `hpsv3-admin-key` (`admin_headers`): `admin_key`, or a random key made
    for this start that only this object holds (model_repository/admin.py). Logs (server and model stubs) go to
    `workdir/tritonserver.log`; without a `workdir` a temporary one is used and removed by a clean `stop()`.
    `binary`: a tritonserver installed on the system (NVIDIA's image) instead of nvidia-pytriton's, run with its
    own backends and environment, logging to this process's stdout (the container's log).
    """

    def __init__(
        self,
        model_repository: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 8001,
        http_port: int | None = 8000,
        metrics_port: int | None = 8002,
        workdir: str | os.PathLike | None = None,
        log_verbose: int = 0,
        explicit_models: bool = False,
        tls: GrpcTls | None = None,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike | None = None,
        allocator: str = "auto",
        admin_key: str | None = None,
        http_address: str | None = None,
        metrics_address: str | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.binary = Path(binary) if binary is not None else None
        self.host = host
        plain = LOOPBACK_ADDRESS if tls is not None else host  # TLS covers gRPC only: plain ports stay local
        self.http_address = http_address or plain
        self.metrics_address = metrics_address or plain
        self._own_key = admin_key is None
        self._admin_key = admin_key or new_admin_key()
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.log_verbose = log_verbose
        self.explicit_models = explicit_models  # load every model at start, and allow reloads (the watchdog)
        self.tls = tls
        self.extra_args = list(extra_args)
        self.allocator, self._malloc_library = allocators.resolve(allocator)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self._process: subprocess.Popen | None = None
        self._shm_prefix = f"hpsv3_{os.getpid()}_{uuid.uuid4().hex[:8]}_"

    def allocator_note(self) -> str:
        """Which malloc tritonserver runs with, in words (printed by `hpsv3 serve` and the entrypoint)."""
        if self._malloc_library is None:
            return "glibc (tcmalloc, if installed, keeps it flatter under sustained load: libtcmalloc-minimal4)"
        stubs = "its Python stubs keep glibc's" if self.binary is None else "its Python stubs inherit it"
        return f"{self.allocator} ({self._malloc_library}); {stubs}"

    def exposure_warnings(self) -> list[str]:
        """One line per port reachable beyond this machine, saying whether it is plain text."""
        ports = [
            ("gRPC", self.host, self.grpc_port, self.tls is None),
            ("HTTP", self.http_address, self.http_port, True),
            ("metrics", self.metrics_address, self.metrics_port, True),
        ]
        return [
            f"WARNING: {name} on {address}:{port} is reachable beyond this machine"
            + (" in plain text (gRPC TLS: --grpc-tls-cert; HTTP and metrics then stay on 127.0.0.1)" if plain else "")
            for name, address, port, plain in ports
            if port is not None and not is_loopback(address)
        ]

    def control_note(self) -> str:
        """Who can use the control APIs, in words (printed by `hpsv3 serve` and the entrypoint)."""
        holder = "a random key made for this start, held by the watchdog only" if self._own_key else "the key file"
        return f"load/unload/index/shared-memory/trace/logging need header {ADMIN_HEADER}: {holder}"

    @property
    def admin_key(self) -> str:
        """The key of the restricted APIs (for the watchdog; never printed)."""
        return self._admin_key

    def admin_headers(self, grpc: bool) -> dict[str, str]:
        """What the restricted APIs (load, unload, index, shared memory, trace, logging) need: the admin key
        as an HTTP header, or as gRPC metadata (`grpc=True`)."""
        return admin_headers(self._admin_key, grpc)

    # -- addresses -----------------------------------------------------------------------------------------

    @staticmethod
    def _connect_host(address: str) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(address, address)
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_url(self) -> str:
        """`host:port` for tritonclient.grpc / HPSv3Client."""
        return f"{self._connect_host(self.host)}:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        if self.http_port is None:
            return None
        return f"http://{self._connect_host(self.http_address)}:{self.http_port}"

    @property
    def metrics_url(self) -> str | None:
        """The Prometheus endpoint (`.../metrics`)."""
        if self.metrics_port is None:
            return None
        return f"http://{self._connect_host(self.metrics_address)}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "tritonserver.log" if self.workdir is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 180) -> None:
        """Start the server and return once it (and every model) is ready; raises ServerStartError."""
        if self.is_running():
            raise ServerStartError(f"tritonserver is already running (pid {self.pid})")
        binary, backend_dir = self._prepare()
        env = self._environment()
        command = [os.fspath(binary), *self.arguments(backend_dir)]
        # the log file is handed to the child and closed right after the fork; a system server logs to our stdout
        log = open(self.log_path, "wb") if self.binary is None else None  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise ServerStartError(f"cannot run {binary}: {exc}") from exc
        finally:
            if log is not None:
                log.close()
        atexit.register(self.stop)
        self._wait_ready(timeout_s)

    def _prepare(self) -> tuple[Path, Path | None]:
        """Check the installation and inputs, then lay out the work directory; returns (binary, backends dir)."""
        if not self.model_repository.is_dir():
            raise ServerStartError(f"model repository {self.model_repository} is not a directory")
        self._check_ports()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="hpsv3-triton-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.binary is not None:
            if not self.binary.is_file():
                raise ServerStartError(f"{self.binary} does not exist")
            return self.binary, None
        dist, _ = _pytriton_paths()
        binary = dist / "bin" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / _STUB
        for path in (binary, stub):
            if not path.is_file():
                raise ServerStartError(
                    f"{path} is missing: the nvidia-pytriton wheel has no build for Python {version}"
                )
        _check_numpy()
        backend_dir = self.workdir / "backends"
        python_backend = backend_dir / "python"
        shutil.rmtree(python_backend, ignore_errors=True)
        shutil.copytree(dist / "backends" / "python", python_backend, ignore=shutil.ignore_patterns("__pycache__"))
        if self._malloc_library is None:
            shutil.copy2(stub, python_backend / _STUB)
        else:
            shutil.copy2(stub, python_backend / f"{_STUB}.bin")
            (python_backend / _STUB).write_text(_STUB_LAUNCHER)
        for path in python_backend.glob(f"{_STUB}*"):
            path.chmod(0o755)
        for name, module in (("hpsv3_serve", hpsv3_serve.__file__), ("hpsv3_repository", __file__)):
            (python_backend / name).symlink_to(Path(module).resolve().parent, target_is_directory=True)
        return binary, backend_dir

    def _check_ports(self) -> None:
        if self.tls is not None and self.tls.client_ca is not None and self.http_port is None:
            raise ServerStartError("mutual TLS on gRPC needs the HTTP port for readiness checks (give --http-port)")
        ports = {
            "grpc": (self.host, self.grpc_port),
            "http": (self.http_address, self.http_port),
            "metrics": (self.metrics_address, self.metrics_port),
        }
        for kind, (address, port) in ports.items():
            if port is not None and _port_in_use(address, port):
                raise ServerStartError(
                    f"{kind} port {port} on {address} is already in use (another tritonserver or `hpsv3 serve`?); "
                    f"stop it or choose another port with --{kind}-port"
                )

    def arguments(self, backend_dir: Path | None = None, redacted: bool = False) -> list[str]:
        """tritonserver's arguments; `backend_dir`: the prepared nvidia-pytriton backends (None: the system's);
        `redacted`: the admin key replaced by a placeholder, for printing."""
        args = [f"--model-repository={self.model_repository}"]
        if backend_dir is not None:
            dist, _ = _pytriton_paths()
            args += [f"--backend-directory={backend_dir}", f"--cache-directory={dist / 'caches'}"]
        args += [
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            f"--log-verbose={self.log_verbose}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
        ]
        if self.explicit_models:
            args += ["--model-control-mode=explicit", "--load-model=*"]
        if self.tls is not None:
            args += self.tls.arguments()
        if self.http_port is None:
            args.append("--allow-http=false")
        else:
            args += [f"--http-address={self.http_address}", f"--http-port={self.http_port}"]
        if self.metrics_port is None:
            args.append("--allow-metrics=false")
        else:
            args += [f"--metrics-address={self.metrics_address}", f"--metrics-port={self.metrics_port}"]
        args += restriction_arguments("<admin key>" if redacted else self._admin_key, self.http_port is not None)
        return args + self.extra_args

    def _environment(self) -> dict[str, str]:
        """The server's environment: our interpreter for the backend stub, the wheel's shared libraries."""
        env = dict(os.environ)
        if self._malloc_library is not None:
            env["HPSV3_STUB_LD_PRELOAD"] = env.get("LD_PRELOAD", "")
            env["LD_PRELOAD"] = _prepend(self._malloc_library, env.get("LD_PRELOAD"))
        if self.binary is not None:
            return env  # NVIDIA's image: its own stub, Python and libraries
        _, libs = _pytriton_paths()
        library_path = _prepend(libs, env.get("LD_LIBRARY_PATH"))
        if libdir := _libpython_dir():  # the stub then embeds this exact Python
            library_path = _prepend(libdir, library_path)
        env["LD_LIBRARY_PATH"] = library_path
        env["PATH"] = _prepend(Path(sys.executable).parent, env.get("PATH"))
        return env

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._process.poll() if self._process is not None else -1
            if code is not None:
                self._stop(keep_workdir=True)  # reaps stubs of models that did load; the report points at the log
                raise ServerStartError(f"tritonserver exited with code {code} while starting\n{self._log_report()}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                report = self._log_report()
                self._stop(keep_workdir=True)  # the report points at the log
                raise ServerStartError(f"tritonserver was not ready after {timeout_s:.0f} s\n{report}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        if self.http_url is not None:
            try:
                with _DIRECT.open(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        tls = {"ssl": True, "root_certificates": str(self.tls.cert)} if self.tls is not None else {}
        try:
            with grpcclient.InferenceServerClient(self.grpc_url, **tls) as client:
                return bool(client.is_server_ready(client_timeout=2))
        except InferenceServerException:
            return False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server log ('' when there is none)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _log_report(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no server log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        errors = [line.replace("\\n", "\n    ") for line in text.splitlines() if _ERROR_LINE.match(line)]
        errors = [line for line in errors if not any(noise in line for noise in _CPU_NOISE)][-10:]
        report = "errors:\n" + "\n".join(errors) + "\n" if errors else ""
        return f"{report}last {LOG_TAIL_LINES} lines of {self.log_path}:\n{self.log_tail()}"

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        if self._process is None:
            raise ServerStartError("tritonserver is not running")
        return self._process.wait()

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the server (it stops its model stubs), SIGKILL its process group after `timeout_s`."""
        self._stop(timeout_s)

    def _stop(self, timeout_s: float = 30, keep_workdir: bool = False) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid  # the server leads its own process group (start_new_session)
        clean = True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                clean = False
                os.killpg(group, signal.SIGKILL)
                process.wait(10)
        try:  # model stubs the server left behind, if any
            os.killpg(group, signal.SIGKILL)
            clean = False
        except ProcessLookupError:
            pass
        for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            leftover.unlink(missing_ok=True)
        if clean and not keep_workdir and self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
