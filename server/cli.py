"""`mis`: the command line for what people repeat with the server.

    mis serve                               run the server (gunicorn), say when it is ready
    mis models list | info | upload | remove | score     against a running server
    mis package MODEL_FILE -o ARTIFACT.zip  a trained model as an OCI Data Science artifact, offline
    mis promote MODEL_ID --env ENV          the env change (through the server, or in a local catalog)
    mis keys new                            an API keys file for local use

The commands that talk to a server take --url and --key, or the client's own variables MIS_URL
(default http://127.0.0.1:8080) and MIS_KEY; the server's variables are in server/config.py.
--json prints the server's answer (or the command's result) as JSON. Exit codes (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_URL = "http://127.0.0.1:8080"

OK, SERVER_ERROR, USAGE, UNREACHABLE, LOCAL_ERROR = 0, 1, 2, 3, 4
EXIT_CODES = {
    OK: "done",
    SERVER_ERROR: "the server answered with an error (shown as its message, code and HTTP status)",
    USAGE: "the command line is wrong (argparse's own code)",
    UNREACHABLE: "no server answered at the URL",
    LOCAL_ERROR: "a local file or model could not be read or written",
}


class Failure(Exception):
    def __init__(self, message: str, exit_code: int, answer: dict | None = None):
        super().__init__(message)
        self.exit_code, self.answer = exit_code, answer


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class Client:
    """The server's /api/v1 over urllib; an error answer becomes a Failure with its message."""

    def __init__(self, url: str, key: str | None, timeout_s: float = 60):
        self.url, self.key, self.timeout_s = url.rstrip("/"), key, timeout_s

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # nosec B310: --url is checked to be http(s) in _client
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as answer:
            raw = answer.read()
            try:
                error = json.loads(raw)
            except ValueError:
                error = {"error": raw.decode(errors="replace").strip() or answer.reason}
            error = error if isinstance(error, dict) else {"error": str(error)}
            code = f"{error['code']}, " if error.get("code") else ""
            raise Failure(f"{error.get('error', answer.reason)} ({code}HTTP {answer.code})", SERVER_ERROR,
                          {**error, "status": answer.code}) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Failure(f"no server answered at {self.url}: {reason} (start one with `mis serve`, or set "
                          "--url / MIS_URL)", UNREACHABLE) from None

    def json(self, method: str, path: str, body) -> dict:
        return self.call(method, path, json.dumps(body).encode(), "application/json")

    def upload(self, artifact: pathlib.Path, fields: dict[str, str]) -> dict:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{artifact.name}"\r\n'
                     "Content-Type: application/zip\r\n\r\n".encode() + artifact.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call("POST", "/api/v1/uploadmodel/", body, f"multipart/form-data; boundary={boundary}")


def _client(args) -> Client:
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        raise Failure(f"--url must be an http(s) URL, got {args.url!r}", USAGE)
    return Client(args.url, args.key)


def _quoted(model_id: str) -> str:
    return urllib.parse.quote(model_id, safe="")


# --------------------------------------------------------------------------------------------
# Commands: each returns what --json prints, and the line(s) a person reads
# --------------------------------------------------------------------------------------------


def cmd_models_list(args):
    client, models, page = _client(args), [], None
    while True:  # every page
        query = urllib.parse.urlencode({"no_of_models": 1000, **({"page": page} if page else {})})
        answer = client.call("GET", f"/api/v1/listmodels/?{query}")
        models += answer.get("models", [])
        page = answer.get("next_page")
        if not page:
            break
    answer = {"models": models, "count": len(models)}
    rows = [("ID", "NAME", "VERSION", "FRAMEWORK", "ENV", "LOADED")]
    rows += [(m.get("id"), m.get("name"), m.get("version"), m.get("framework"), m.get("env") or "-",
              "yes" if m.get("loaded") else "no") for m in models]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return answer, "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


def cmd_models_info(args):
    answer = _client(args).call("GET", f"/api/v1/getmodelinfo/{_quoted(args.model_id)}")
    return answer, json.dumps(answer, indent=2)


def cmd_models_upload(args):
    artifact = pathlib.Path(args.artifact)
    if not artifact.is_file():
        raise Failure(f"{artifact}: no such file (make one with `mis package MODEL_FILE -o {artifact}`)", LOCAL_ERROR)
    fields = {"model_name": args.name, "version": args.version, **({"env": args.env} if args.env else {})}
    answer = _client(args).upload(artifact, fields)
    return answer, (f"uploaded {answer['model_id']} (name {answer.get('model_name')}, version "
                    f"{answer.get('version')}, env {answer.get('env') or '-'})")


def cmd_models_remove(args):
    answer = _client(args).call("DELETE", f"/api/v1/removemodel/{_quoted(args.model_id)}")
    return answer, f"removed {args.model_id}"


def cmd_models_score(args):
    if (args.model_id is None) == (args.name is None):
        raise Failure("name the model: MODEL_ID, or --name NAME (with an optional --version)", USAGE)
    raw = args.data
    try:
        if raw == "-":
            raw = sys.stdin.read()
        elif raw.startswith("@"):
            raw = pathlib.Path(raw[1:]).read_text()
        payload = json.loads(raw)
    except OSError as exc:
        raise Failure(f"cannot read {raw[1:]}: {exc.strerror}", LOCAL_ERROR) from None
    except ValueError as exc:
        raise Failure(f"--data is not JSON: {exc}", USAGE) from None
    query = {"model_id": args.model_id} if args.model_id else {"model_name": args.name}
    if args.version:
        query["version"] = args.version
    answer = _client(args).json("POST", "/api/v1/score/?" + urllib.parse.urlencode(query), payload)
    return answer, json.dumps(answer.get("prediction"))


def cmd_package(args):
    from server.package import PackageError, package  # loads ML libraries: only for this command

    dest = pathlib.Path(args.output or pathlib.Path(args.model_file).with_suffix(".zip").name)
    try:
        built = package(pathlib.Path(args.model_file), dest, use_ads=args.ads)
    except PackageError as exc:
        raise Failure(str(exc), LOCAL_ERROR) from None
    width = f"{len(built.feature_names)} features" if built.feature_names else "width unknown"
    return built.to_dict(), (f"wrote {built.path} ({built.framework}, {built.model_file}, {width}, by "
                             f"{built.writer}); upload it with `mis models upload {built.path} --name NAME`")


# Where a promotion is written: one function per backend, chosen by the options given.
def _promote_on_server(args, env):
    answer = _client(args).json("POST", f"/api/v1/promotemodel/{_quoted(args.model_id)}", {"env": env})
    return answer, f"through the server at {args.url}"


def _promote_in_catalog(args, env):
    from server.backends.local_catalog import LocalCatalog
    from server.errors import MISError

    try:
        info = LocalCatalog(pathlib.Path(args.catalog)).set_env(args.model_id, env)
    except MISError as exc:
        raise Failure(exc.message, LOCAL_ERROR) from None
    answer = {"model_id": info.id, "env": info.env, "status": "promoted" if env else "withdrawn"}
    return answer, f"in the local catalog {args.catalog} (a running server sees it within MIS_METADATA_TTL_S)"


def _promote_in_oci(args, env):
    """In the OCI Data Science catalog, with the caller's own OCI config (the servers only read it)."""
    from server.backends.oci_catalog import promote
    from server.config import ConfigError
    from server.errors import MISError

    try:
        info = promote(args.model_id, env, config_file=args.oci_config, profile=args.oci_profile,
                       endpoint=args.oci_endpoint)
    except ConfigError as exc:
        raise Failure(str(exc).replace("MIS_OCI_CONFIG_FILE", "--oci-config").replace("MIS_OCI_PROFILE", "--oci-profile"),
                      LOCAL_ERROR) from None
    except MISError as exc:
        raise Failure(exc.message, LOCAL_ERROR) from None
    answer = {"model_id": info.id, "env": info.env, "status": "promoted" if env else "withdrawn"}
    return answer, "in the OCI Data Science catalog (every replica serves it within MIS_METADATA_TTL_S)"


def cmd_promote(args):
    if (args.env is None) == (not args.withdraw):
        raise Failure("give --env ENV, or --withdraw", USAGE)
    if args.oci and args.catalog:
        raise Failure("give --catalog DIR or --oci, not both", USAGE)
    backend = _promote_in_oci if args.oci else _promote_in_catalog if args.catalog else _promote_on_server
    answer, where = backend(args, None if args.withdraw else args.env)
    done = f"promoted {args.model_id} to env {args.env}" if args.env else f"withdrew the env of {args.model_id}"
    return answer, f"{done} {where}"


def _write_private(path: pathlib.Path, text: str) -> None:
    """`text` as a fresh file of mode 0600 at `path`, in one rename: written to a new file beside it
    first, so no reader sees half of it and an old file's mode or a link never carries over."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(handle, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(text)
        os.replace(temp, path)  # a link put there meanwhile is replaced, never followed
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def cmd_keys_new(args):
    keys = {"keys": [{"name": name, "scopes": [scope], "key": secrets.token_urlsafe(32)}
                     for name, scope in (("admin", "admin"), ("scoring", "score"), ("metrics", "metrics"))]}
    text = json.dumps(keys, indent=2) + "\n"
    if args.output:
        path = pathlib.Path(args.output)
        if path.is_symlink():  # dangling or not: never write keys where a link points
            raise Failure(f"{path} is a symbolic link: refusing to write keys through it (name the file itself)",
                          LOCAL_ERROR)
        if path.exists() and not args.force:
            raise Failure(f"{path} exists: pass --force to replace it", LOCAL_ERROR)
        try:
            _write_private(path, text)
        except OSError as exc:
            raise Failure(f"cannot write {path}: {exc.strerror}", LOCAL_ERROR) from None
        return keys, (f"wrote {path} (keys admin, scoring, metrics); start the server with "
                      f"MIS_API_KEYS_FILE={path}")
    return keys, text.rstrip("\n")


def cmd_serve(args) -> int:
    """gunicorn with server/gunicorn.conf.py; one line once readiness answers 200. Signals go to
    gunicorn, whose exit code is ours."""
    from server.config import Config, ConfigError

    env = dict(os.environ)
    env.setdefault("MIS_INSTANCE_ID", secrets.token_hex(8))  # readiness names it: this server's, not another's
    if args.bind:
        env["MIS_BIND"] = args.bind
    if args.no_auth:
        env["MIS_AUTH"] = "off"
    conf = pathlib.Path(__file__).with_name("gunicorn.conf.py")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf)], env=env)
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), lambda number, frame: process.send_signal(number))
    try:
        bind = Config.from_env(env).bind
    except ConfigError:  # gunicorn says what is wrong and exits
        return process.wait()
    host, port = bind.rsplit(":", 1)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}"  # nosec B104: only the URL polled, a wildcard bind is reached on loopback
    while process.poll() is None:
        if _ready(url, env["MIS_INSTANCE_ID"]):
            print(f"ready: API {url}/api/v1/  docs {url}/docs  (Ctrl-C stops)", file=sys.stderr, flush=True)
            break
        time.sleep(0.2)
    return process.wait()


def _ready(url: str, instance: str) -> bool:
    """Readiness answers 200 from the server named `instance` (another on the address is not ours)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health/ready", timeout=2) as response:  # nosec B310: an http URL built from MIS_BIND
            return response.status == 200 and json.load(response).get("instance") == instance
    except (OSError, ValueError, AttributeError):  # AttributeError: an answer that is JSON but no object
        return False


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


_MODEL_FILES = "@MODEL_FILES@"


class _PackageHelp(argparse.HelpFormatter):
    """`mis package --help` names the model files the frameworks read (server/frameworks/), asked
    only when the help is shown: the framework registry loads numpy and pandas, which no other
    command needs."""

    def add_text(self, text):
        if text and _MODEL_FILES in text:
            from server.frameworks import FRAMEWORKS, package_formats

            names = ", ".join(framework.name for framework in FRAMEWORKS)
            text = text.replace(_MODEL_FILES, f"{package_formats()} model files ({names})")
        super().add_text(text)


def build_parser() -> argparse.ArgumentParser:
    exit_codes = "exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(prog="mis", description=__doc__.split("\n\n")[0].strip(), epilog=exit_codes)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the result as JSON")
    remote = argparse.ArgumentParser(add_help=False, parents=[output])
    remote.add_argument("--url", default=os.environ.get("MIS_URL") or DEFAULT_URL,
                        help=f"the server (default: $MIS_URL, else {DEFAULT_URL})")
    remote.add_argument("--key", default=os.environ.get("MIS_KEY"),
                        help="API key sent as a Bearer token (default: $MIS_KEY; none when the server has MIS_AUTH=off)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server; print its URLs once it is ready",
                                description="Run the server with gunicorn (server/gunicorn.conf.py), configured by "
                                            "the MIS_* variables (README, Configuration); print one line with the "
                                            "API's and the docs' URLs once it is ready. Exits with gunicorn's code.")
    serve.add_argument("--bind", metavar="HOST:PORT", help="listen here (sets MIS_BIND)")
    serve.add_argument("--no-auth", action="store_true", help="no API keys (sets MIS_AUTH=off: loopback only)")
    serve.set_defaults(run=cmd_serve)

    models = commands.add_parser("models", help="list, inspect, upload, remove and score models on a server",
                                 description="Models on a running server.", epilog=exit_codes)
    verbs = models.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", parents=[remote], help="every model the server knows",
                               description="Every model of the catalog and every upload, and whether it is loaded.")
    listing.set_defaults(run=cmd_models_list)
    info = verbs.add_parser("info", parents=[remote], help="one model's metadata",
                            description="A model's metadata (getmodelinfo), as JSON.")
    info.add_argument("model_id")
    info.set_defaults(run=cmd_models_info)
    upload = verbs.add_parser("upload", parents=[remote], help="upload an artifact zip (admin)",
                              description="Upload an OCI Data Science artifact zip (make one with `mis package`); "
                                          "the server stores and loads it and prints its model id.")
    upload.add_argument("artifact", help="the artifact zip")
    upload.add_argument("--name", required=True, help="the model's name (versions share it)")
    upload.add_argument("--version", default="1", help="its version (default 1)")
    upload.add_argument("--env", help="its env, where the server lets uploads claim one (else promote it after)")
    upload.set_defaults(run=cmd_models_upload)
    remove = verbs.add_parser("remove", parents=[remote], help="unload a model; delete an upload (admin)",
                              description="Unload a model in every worker; an uploaded model is deleted too.")
    remove.add_argument("model_id")
    remove.set_defaults(run=cmd_models_remove)
    score = verbs.add_parser("score", parents=[remote], help="score rows with a model",
                             description="Score a JSON body (rows, one row, {\"data\": rows}, a dict of columns) "
                                         "with a model named by id, or by name and an optional version or alias. "
                                         "Prints the prediction (--json: the whole answer).")
    score.add_argument("model_id", nargs="?", help="the model's id (or use --name)")
    score.add_argument("--name", help="the model's name, for versions and aliases")
    score.add_argument("--version", help="with --name: a version or an alias (default: the server's choice)")
    score.add_argument("-d", "--data", required=True, help="the JSON body; @FILE reads a file, - standard input")
    score.set_defaults(run=cmd_models_score)

    package = commands.add_parser("package", parents=[output], help="a model file as an artifact zip, offline",
                                  formatter_class=_PackageHelp,
                                  description="Turn a trained model file into an OCI Data Science model artifact "
                                              "zip (score.py, runtime.yaml, the model file, input_schema.json), "
                                              f"offline, with no OCI account. Reads {_MODEL_FILES}. Uses "
                                              "oracle-ads when it is installed.")
    package.add_argument("model_file")
    package.add_argument("-o", "--output", help="the zip to write (default: the model file's name, .zip, here)")
    writer = package.add_mutually_exclusive_group()
    writer.add_argument("--ads", dest="ads", action="store_true", default=None, help="require oracle-ads")
    writer.add_argument("--no-ads", dest="ads", action="store_false", help="write the plain artifact, without oracle-ads")
    package.set_defaults(run=cmd_package)

    promote = commands.add_parser("promote", parents=[remote], help="set a model's env (admin)",
                                  description="Set (or withdraw) a model's `env` metadata, which gates serving on a "
                                              "server with MIS_ENV. By default through the server (POST "
                                              "/api/v1/promotemodel/{id}: an upload's record or the server's local "
                                              "catalog; every worker serves it within MIS_METADATA_TTL_S); with "
                                              "--catalog DIR in a local catalog directory, no server needed.")
    promote.add_argument("model_id")
    promote.add_argument("--env", help="the env to serve the model in (dev, qa, prod...)")
    promote.add_argument("--withdraw", action="store_true", help="remove the model's env: no gated server serves it")
    promote.add_argument("--catalog", metavar="DIR", help="write the local catalog in DIR (e.g. var/catalog) directly")
    promote.add_argument("--oci", action="store_true",
                         help="write the OCI Data Science catalog with your own OCI config (read, change env, write "
                              "back if-match its etag)")
    promote.add_argument("--oci-config", metavar="FILE", help="with --oci: your OCI config file (default ~/.oci/config)")
    promote.add_argument("--oci-profile", default="DEFAULT", metavar="NAME", help="with --oci: its profile (default DEFAULT)")
    promote.add_argument("--oci-endpoint", metavar="URL", help="with --oci: a Data Science endpoint (default: the region's)")
    promote.set_defaults(run=cmd_promote)

    keys = commands.add_parser("keys", help="API keys files", description="API keys files.")
    key_verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
    new = key_verbs.add_parser("new", parents=[output], help="a new keys file: admin, scoring and metrics keys",
                               description="Print (or write, mode 0600) a new API keys file for MIS_API_KEYS_FILE: "
                                           "random keys named admin (scope admin), scoring (score) and metrics "
                                           "(metrics).")
    new.add_argument("-o", "--output", help="write the file here instead of printing it")
    new.add_argument("--force", action="store_true", help="replace an existing --output file")
    new.set_defaults(run=cmd_keys_new)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run is cmd_serve:
        return cmd_serve(args)
    try:
        answer, text = args.run(args)
    except Failure as failure:
        if getattr(args, "json", False):
            print(json.dumps(failure.answer or {"error": str(failure)}))
        print(f"mis: error: {failure}", file=sys.stderr)
        return failure.exit_code
    try:
        print(json.dumps(answer, indent=2) if args.json else text, flush=True)
    except BrokenPipeError:  # `mis models info X | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return OK


if __name__ == "__main__":
    sys.exit(main())
