#!/usr/bin/python3
"""Conformance of sluice's grpc_listen with Envoy's rate limit service API.

Drives the real binary over gRPC, as Envoy's envoy.filters.http.ratelimit filter does,
with envoyproxy/ratelimit config files that use every feature that service's README
documents (exact key and value, key only, wildcard value, nested descriptors,
unlimited, a descriptor without a limit, shadow_mode, replaces, one domain per file,
a directory of files), and checks each answer field by field against what the service
answers: overall and per-descriptor codes, current_limit, limit_remaining,
duration_until_reset, hits_addend (request and descriptor), the per-descriptor limit
override, response headers, reload on SIGHUP and a clean exit on SIGTERM. One check
also builds a request byte by byte to prove the field numbers are Envoy's.

Run (ctest does):
  /usr/bin/python3 tests/rls/rls_conformance.py --sluice build/sluice --proto proto

Needs Debian's python3-grpcio and python3-grpc-tools; stubs are generated from --proto
into a temporary directory. Loopback only; every wait is bounded. Counting limits use
windows of an hour or a day, and the test starts away from an hour boundary, so no
window ends while it runs.

Prints one line per check ("PASS name" / "FAIL name: why" with the response) and exits
0 only when every check passes. Lines marked "BUG" are checks that fail against the
current binary because its answer differs from what envoyproxy/ratelimit documents or
answers. "NOTE" lines report differences from the service's code (not its README) and
do not change the exit status.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

MAX_UINT32 = 2**32 - 1
HOUR = 3600
DAY = 86400
# The service's time dividers (src/utils/utilities.go UnitToDivider), by
# RateLimitResponse.RateLimit.Unit / envoy.type.v3.RateLimitUnit number.
DIVIDER = {1: 1, 2: 60, 3: HOUR, 4: DAY, 5: 30 * DAY, 6: 365 * DAY, 7: 7 * DAY}

# ---- Configs -------------------------------------------------------------------------

# A file named directly in envoy_ratelimit_configs.
MAIN_YAML = """\
domain: conf
descriptors:
  # Exact key and value (README Example 1), with a name for the headers.
  - key: database
    value: users
    rate_limit:
      name: db_users
      unit: hour
      requests_per_unit: 5

  # Key only: every value has its own counter (README Example 2).
  - key: to_number
    rate_limit:
      unit: hour
      requests_per_unit: 3

  # Wildcard value (README Example 9).
  - key: path
    value: /api/*
    rate_limit:
      unit: hour
      requests_per_unit: 4

  # Nested descriptors (README Example 2).
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 2

  # Unlimited (README Example 5).
  - key: ldap
    rate_limit:
      unlimited: true

  # A descriptor without a rate_limit: whitelisted.
  - key: free
    value: pass

  # shadow_mode (README Example 6).
  - key: shadow
    value: soft
    rate_limit:
      unit: hour
      requests_per_unit: 1
    shadow_mode: true

  # Black list: requests_per_unit 0 (README Example 3).
  - key: blocked
    rate_limit:
      unit: hour
      requests_per_unit: 0

  # replaces (README Example 7).
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: hour
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: hour
"""

# A directory in envoy_ratelimit_configs: every *.yaml / *.yml directly in it.
SECOND_YAML = """\
domain: second
descriptors:
  - key: client
    value: mobile
    rate_limit:
      name: mobile_clients
      unit: hour
      requests_per_unit: 2
"""

RELOAD_YAML = """\
domain: reloadable
descriptors:
  - key: tenant
    rate_limit:
      unit: hour
      requests_per_unit: {rpu}
"""

# Files in the directory that must be skipped: a hidden file, a non-YAML file and a
# subdirectory. Each would break the load (a duplicate domain, invalid YAML) if read.
HIDDEN_YAML = "domain: second\ndescriptors: []\n"
NOT_YAML = "this: [is not: valid yaml\n"


# ---- Checks --------------------------------------------------------------------------


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []
        self.notes = []

    def check(self, name, problems, response=None, bug=None):
        """problems: a list of what is wrong (empty = pass), or a bool (True = pass)."""
        if isinstance(problems, bool):
            problems = [] if problems else ["condition is false"]
        if not problems:
            self.passed += 1
            print(f"PASS {name}", flush=True)
            return True
        tag = f"FAIL BUG {name}" if bug else f"FAIL {name}"
        msg = f"{tag}: {'; '.join(problems)}"
        if bug:
            msg += f"\n     expected per envoyproxy/ratelimit: {bug}"
        if response is not None:
            msg += f"\n     response: {show(response)}"
        print(msg, flush=True)
        self.failed.append(name)
        return False

    def note(self, name, differs, detail, response=None):
        if not differs:
            print(f"NOTE {name}: same as the service", flush=True)
            return
        msg = f"NOTE {name}: differs from the service's code: {detail}"
        if response is not None:
            msg += f"\n     response: {show(response)}"
        print(msg, flush=True)
        self.notes.append(name)


def show(message):
    if isinstance(message, (bytes, bytearray)):
        return bytes(message).hex()
    if isinstance(message, str):
        return message
    from google.protobuf import text_format

    return "{" + text_format.MessageToString(message, as_one_line=True) + "}"


# ---- Sluice --------------------------------------------------------------------------


class Sluice:
    """The binary, started with port 0 everywhere; stderr is collected line by line."""

    def __init__(self, binary, config_path):
        self.lines = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", config_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def stderr(self):
        with self.lock:
            return list(self.lines)

    def wait_for_line(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.stderr():
                m = regex.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the reader drain
                for line in self.stderr():
                    m = regex.search(line)
                    if m:
                        return m
                return None
            time.sleep(0.05)
        return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---- Wire helpers (hand-made protobuf) -----------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def parse_fields(data):
    """{field number: [values]}: ints for varints, bytes for length-delimited."""
    fields = {}
    i = 0

    def read_varint():
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            n = read_varint()
            value = bytes(data[i : i + n])
            i += n
        elif wire == 1:
            value = bytes(data[i : i + 8])
            i += 8
        elif wire == 5:
            value = bytes(data[i : i + 4])
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


# ---- The test ------------------------------------------------------------------------


def generate_stubs(proto_dir, out_dir):
    protos = []
    for root, _, files in os.walk(proto_dir):
        for f in files:
            if f.endswith(".proto"):
                protos.append(os.path.relpath(os.path.join(root, f), proto_dir))
    protos.sort()
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", "-I/usr/include",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"FAIL protoc: {' '.join(cmd)}\n{result.stderr}")
    return protos


def avoid_hour_boundary(margin=45):
    """Counts use hour and day windows aligned to the epoch: start well inside one."""
    left = HOUR - time.time() % HOUR
    if left < margin:
        print(f"(waiting {left + 2:.0f} s to pass the hour boundary)", flush=True)
        time.sleep(left + 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="sluice-rls-conformance-")
    try:
        return run(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp})")


def run(args, tmp):
    gen = os.path.join(tmp, "gen")
    os.makedirs(gen)
    generate_stubs(os.path.abspath(args.proto), gen)
    sys.path.insert(0, gen)
    import grpc
    from envoy.config.core.v3 import base_pb2  # noqa: F401 (imported by rls_pb2)
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
    from envoy.type.v3 import ratelimit_unit_pb2

    Request = rls_pb2.RateLimitRequest
    Response = rls_pb2.RateLimitResponse
    Descriptor = ratelimit_pb2.RateLimitDescriptor
    OK, OVER = Response.OK, Response.OVER_LIMIT
    U = Response.RateLimit  # the response's unit enum

    c = Checks()

    # Enum numbers are Envoy's.
    c.check("enum numbers: Code OK=1 OVER_LIMIT=2, units SECOND..WEEK=1..7 in both enums", [
        p for p in [
            f"OK={Response.OK}" if Response.OK != 1 else None,
            f"OVER_LIMIT={Response.OVER_LIMIT}" if Response.OVER_LIMIT != 2 else None,
        ] + [
            f"{n}: response {U.Unit.Value(n)} override {ratelimit_unit_pb2.RateLimitUnit.Value(n)}"
            for n, want in [("SECOND", 1), ("MINUTE", 2), ("HOUR", 3), ("DAY", 4),
                            ("MONTH", 5), ("YEAR", 6), ("WEEK", 7)]
            if U.Unit.Value(n) != want or ratelimit_unit_pb2.RateLimitUnit.Value(n) != want
        ] if p
    ])

    # ---- Configs and start ----
    main_yaml = os.path.join(tmp, "main.yaml")
    rl_dir = os.path.join(tmp, "rl.d")
    os.makedirs(os.path.join(rl_dir, "sub"))
    with open(main_yaml, "w") as f:
        f.write(MAIN_YAML)
    with open(os.path.join(rl_dir, "second.yaml"), "w") as f:
        f.write(SECOND_YAML)
    reload_yaml = os.path.join(rl_dir, "reload.yml")
    with open(reload_yaml, "w") as f:
        f.write(RELOAD_YAML.format(rpu=7))
    with open(os.path.join(rl_dir, ".hidden.yaml"), "w") as f:
        f.write(HIDDEN_YAML)
    with open(os.path.join(rl_dir, "notes.txt"), "w") as f:
        f.write(NOT_YAML)
    with open(os.path.join(rl_dir, "sub", "nested.yaml"), "w") as f:
        f.write(NOT_YAML)
    server_yaml = os.path.join(tmp, "sluice.yaml")
    with open(server_yaml, "w") as f:
        f.write(
            'listen: "127.0.0.1:0"\n'
            'admin_listen: "127.0.0.1:0"\n'
            'grpc_listen: "127.0.0.1:0"\n'
            "workers: 1\n"
            f'envoy_ratelimit_configs: ["{main_yaml}", "{rl_dir}"]\n'
            "rules: []\n"
        )

    avoid_hour_boundary()
    sluice = Sluice(args.sluice, server_yaml)
    try:
        m = sluice.wait_for_line(r"grpc on 127\.0\.0\.1:(\d+)", timeout=15)
        if not c.check("start: main.yaml and the directory load (.hidden.yaml, notes.txt and sub/ "
                       "skipped, each would fail the load), stderr names the grpc port",
                       m is not None):
            print("\n".join("     stderr: " + l for l in sluice.stderr()))
            return 1
        port = int(m.group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            c.check("start: gRPC channel ready", False)
            return 1
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)

        def D(*entries, limit=None, hits=None):
            d = Descriptor()
            for k, v in entries:
                d.entries.add(key=k, value=v)
            if limit is not None:
                d.limit.requests_per_unit = limit[0]
                d.limit.unit = limit[1]
            if hits is not None:
                d.hits_addend.value = hits
            return d

        def call(domain, descriptors, hits_addend=0):
            request = Request(domain=domain, descriptors=descriptors, hits_addend=hits_addend)
            try:
                return stub.ShouldRateLimit(request, timeout=5)
            except grpc.RpcError as e:
                return f"gRPC error {e.code()}: {e.details()}"

        def window_left(unit):
            return DIVIDER[unit] - time.time() % DIVIDER[unit]

        def seconds(duration):
            return duration.seconds + duration.nanos / 1e9

        def status_problems(st, code, limit=None, remaining=None, where="", check_reset=True):
            """limit: None = no current_limit; else (requests_per_unit, unit, name)."""
            p = []
            if st.code != code:
                p.append(f"{where}code {Response.Code.Name(st.code)}, want "
                         f"{Response.Code.Name(code)}")
            if limit is None:
                if st.HasField("current_limit"):
                    p.append(f"{where}has current_limit, want none")
                if remaining is not None and st.limit_remaining != remaining:
                    p.append(f"{where}limit_remaining {st.limit_remaining}, want {remaining}")
                return p
            if not st.HasField("current_limit"):
                return p + [f"{where}no current_limit"]
            rpu, unit, name = limit
            cl = st.current_limit
            if cl.requests_per_unit != rpu:
                p.append(f"{where}requests_per_unit {cl.requests_per_unit}, want {rpu}")
            if cl.unit != unit:
                p.append(f"{where}unit {cl.unit}, want {unit}")
            if cl.name != name:
                p.append(f"{where}name {cl.name!r}, want {name!r}")
            if remaining is not None and st.limit_remaining != remaining:
                p.append(f"{where}limit_remaining {st.limit_remaining}, want {remaining}")
            if not check_reset:
                return p
            if not st.HasField("duration_until_reset"):
                p.append(f"{where}no duration_until_reset")
            else:
                d = seconds(st.duration_until_reset)
                if not 0 < d <= DIVIDER.get(unit, 0):
                    p.append(f"{where}duration_until_reset {d:.3f} s, want in (0, "
                             f"{DIVIDER.get(unit)}]")
            return p

        def answer(resp, overall, statuses, headers=None, check_reset=True):
            """statuses: [(code, limit, remaining)]; headers: None = don't check."""
            if isinstance(resp, str):
                return [resp]
            p = []
            if resp.overall_code != overall:
                p.append(f"overall_code {Response.Code.Name(resp.overall_code)}, want "
                         f"{Response.Code.Name(overall)}")
            if len(resp.statuses) != len(statuses):
                return p + [f"{len(resp.statuses)} statuses, want {len(statuses)}"]
            for i, (want, st) in enumerate(zip(statuses, resp.statuses)):
                p += status_problems(st, *want, where=f"statuses[{i}].", check_reset=check_reset)
            if headers is not None:
                p += header_problems(resp, headers)
            return p

        def header_map(resp):
            out = {}
            for h in resp.response_headers_to_add:
                out.setdefault(h.key, []).append(h.value)
            return out

        def header_problems(resp, want):
            """want: {name: exact value, or a regex object, or None = absent}."""
            got = header_map(resp)
            p = []
            for name, value in want.items():
                values = got.get(name, [])
                if value is None:
                    if values:
                        p.append(f"header {name} {values}, want none")
                    continue
                if len(values) != 1:
                    p.append(f"header {name} {values}, want exactly one")
                    continue
                if isinstance(value, re.Pattern):
                    if not value.fullmatch(values[0]):
                        p.append(f"header {name}: {values[0]!r} does not match "
                                 f"{value.pattern!r}")
                elif values[0] != value:
                    p.append(f"header {name}: {values[0]!r}, want {value!r}")
            if resp.request_headers_to_add:
                p.append("request_headers_to_add is not empty")
            return p

        def limit_header(name, remaining):
            # RateLimit: "name";r=R;t=T with T the seconds to the window's end.
            return re.compile(re.escape(f'"{name}";r={remaining};t=') + r"([1-9]\d*)")

        H = U.HOUR

        # sluice's own hour window must not end while the test counts either; take one
        # hit on a counter of its own and read how long its window has left.
        r = call("conf", [D(("to_number", "window-probe"))])
        if not isinstance(r, str) and r.statuses and r.statuses[0].HasField("current_limit"):
            left = seconds(r.statuses[0].duration_until_reset)
            if left < 45:
                print(f"(waiting {left + 2:.0f} s for sluice's hour window to turn)", flush=True)
                time.sleep(left + 2)

        no_headers = {"RateLimit-Policy": None, "RateLimit": None, "Retry-After": None}

        # ---- Exact key and value, counting down, headers ----
        for i, left in enumerate([4, 3]):
            r = call("conf", [D(("database", "users"))])
            c.check(f"exact key+value: request {i + 1} OK, remaining {left}",
                    answer(r, OK, [(OK, (5, H, "db_users"), left)], {
                        "RateLimit-Policy": '"db_users";q=5;w=3600',
                        "RateLimit": limit_header("db_users", left),
                        "Retry-After": None,
                    }), r)
        r = call("conf", [D(("database", "users"))], hits_addend=2)
        c.check("request hits_addend 2 takes 2: remaining 1",
                answer(r, OK, [(OK, (5, H, "db_users"), 1)]), r)
        r = call("conf", [D(("database", "users"), hits=0)], hits_addend=3)
        c.check("descriptor hits_addend 0 looks without taking (beats request's 3)",
                answer(r, OK, [(OK, (5, H, "db_users"), 1)]), r)
        r = call("conf", [D(("database", "users"))])
        c.check("request hits_addend unset takes 1: remaining 0",
                answer(r, OK, [(OK, (5, H, "db_users"), 0)], {
                    "RateLimit": limit_header("db_users", 0), "Retry-After": None}), r)
        r = call("conf", [D(("database", "users"), hits=0)])
        c.check("hits_addend 0 at exactly the limit: OK, remaining 0",
                answer(r, OK, [(OK, (5, H, "db_users"), 0)]), r)
        r = call("conf", [D(("database", "users"))])
        problems = answer(r, OVER, [(OVER, (5, H, "db_users"), 0)], {
            "RateLimit-Policy": '"db_users";q=5;w=3600',
            "RateLimit": limit_header("db_users", 0),
            "Retry-After": re.compile(r"[1-9]\d*"),
        })
        if not problems:
            retry = int(header_map(r)["Retry-After"][0])
            reset = seconds(r.statuses[0].duration_until_reset)
            if abs(retry - reset) > 1.5:
                problems.append(f"Retry-After {retry}, duration_until_reset {reset:.3f} s")
        c.check("past the limit: OVER_LIMIT, remaining 0, Retry-After = duration_until_reset",
                problems, r)
        r = call("conf", [D(("database", "Users"))])
        c.check("values are case-sensitive: database=Users has no limit",
                answer(r, OK, [(OK, None, 0)], no_headers), r)

        # ---- Key only ----
        for i, left in enumerate([2, 1, 0]):
            r = call("conf", [D(("to_number", "111"))])
            c.check(f"key only: to_number=111 request {i + 1}, remaining {left}",
                    answer(r, OK, [(OK, (3, H, ""), left)], {
                        "RateLimit-Policy": '"conf.to_number";q=3;w=3600',
                        "RateLimit": limit_header("conf.to_number", left),
                        "Retry-After": None,
                    }), r)
        r = call("conf", [D(("to_number", "111"))])
        c.check("key only: 4th request OVER_LIMIT",
                answer(r, OVER, [(OVER, (3, H, ""), 0)],
                       {"Retry-After": re.compile(r"[1-9]\d*")}), r)
        r = call("conf", [D(("to_number", "222"))])
        c.check("key only: another value has its own counter",
                answer(r, OK, [(OK, (3, H, ""), 2)]), r)

        # ---- Wildcard value ----
        r = call("conf", [D(("path", "/api/users"))])
        c.check("wildcard value /api/* matches /api/users",
                answer(r, OK, [(OK, (4, H, ""), 3)],
                       {"RateLimit-Policy": '"conf.path_/api/*";q=4;w=3600'}), r)
        r = call("conf", [D(("path", "/api/users"))])
        c.check("wildcard: same value counts down", answer(r, OK, [(OK, (4, H, ""), 2)]), r)
        r = call("conf", [D(("path", "/api/orders"))])
        c.check("wildcard: another matching value has its own counter",
                answer(r, OK, [(OK, (4, H, ""), 3)]), r)
        r = call("conf", [D(("path", "/web/users"))])
        c.check("wildcard: a value that does not match has no limit",
                answer(r, OK, [(OK, None, 0)], no_headers), r)

        # ---- Nested ----
        nested = [("message_type", "marketing"), ("to_number", "333")]
        r = call("conf", [D(*nested)])
        c.check("nested: message_type=marketing, to_number=333 -> 2 per day",
                answer(r, OK, [(OK, (2, U.DAY, ""), 1)], {
                    "RateLimit-Policy": '"conf.message_type_marketing.to_number";q=2;w=86400'}),
                r)
        r = call("conf", [D(*nested)])
        c.check("nested: counts down to 0", answer(r, OK, [(OK, (2, U.DAY, ""), 0)]), r)
        r = call("conf", [D(*nested)])
        c.check("nested: then OVER_LIMIT", answer(r, OVER, [(OVER, (2, U.DAY, ""), 0)]), r)
        r = call("conf", [D(("to_number", "333"))])
        c.check("nested: the top-level to_number limit counts apart",
                answer(r, OK, [(OK, (3, H, ""), 2)]), r)
        r = call("conf", [D(("message_type", "marketing"))])
        c.check("nested: the parent level alone has no limit",
                answer(r, OK, [(OK, None, 0)], no_headers), r)
        r = call("conf", [D(("message_type", "transactional"), ("to_number", "333"))])
        c.check("nested: another parent value has no limit",
                answer(r, OK, [(OK, None, 0)]), r)
        r = call("conf", [D(("to_number", "444"), ("extra", "x"))])
        c.check("more entries than the tree has levels: no limit",
                answer(r, OK, [(OK, None, 0)]), r)

        # ---- Unlimited ----
        r = call("conf", [D(("ldap", "anything"))])
        c.check("unlimited: OK without current_limit, no headers",
                answer(r, OK, [(OK, None, None)], no_headers), r)
        c.check("unlimited: limit_remaining is MaxUint32 (README Example 5)",
                answer(r, OK, [(OK, None, MAX_UINT32)]), r,
                bug="README Example 5: 'The return value for unlimited descriptors will be an "
                    "OK status code with the LimitRemaining field set to MaxUint32 value.' "
                    f"(limit_remaining {MAX_UINT32})")

        # ---- Descriptor without a limit, unknown domain ----
        r = call("conf", [D(("free", "pass"))])
        c.check("descriptor without rate_limit: OK, no current_limit",
                answer(r, OK, [(OK, None, 0)], no_headers), r)
        r = call("no-such-domain", [D(("database", "users")), D(("to_number", "1"))])
        c.check("unknown domain: OK, one OK status per descriptor, no limits",
                answer(r, OK, [(OK, None, 0), (OK, None, 0)], no_headers), r)

        # ---- Black list (requests_per_unit: 0) ----
        r = call("conf", [D(("blocked", "10.0.0.1"))])
        c.check("requests_per_unit 0: OVER_LIMIT with current_limit 0 per hour",
                [p for p in answer(r, OVER, [(OVER, (0, H, ""), 0)])
                 if "duration_until_reset" not in p], r)

        # ---- shadow_mode ----
        r = call("conf", [D(("shadow", "soft"))])
        c.check("shadow_mode: first request OK, remaining 0",
                answer(r, OK, [(OK, (1, H, ""), 0)]), r)
        for i in range(2):
            r = call("conf", [D(("shadow", "soft"))])
            c.check(f"shadow_mode: past the limit ({i + 2}) still OK, current_limit kept, "
                    "no Retry-After",
                    answer(r, OK, [(OK, (1, H, ""), 0)], {"Retry-After": None}), r)

        # ---- replaces (README Example 7) ----
        k1 = D(("key_1", "value_1"), ("user", "bkthomps"))
        k2 = D(("key_2", "value_2"), ("user", "bkthomps"))
        r = call("conf", [k1, k2])
        c.check("replaces: the replaced limit's status is OK with no current_limit, the "
                "replacing one counts",
                answer(r, OK, [(OK, None, 0), (OK, (10, H, ""), 9)]), r)
        for i in range(9):
            r = call("conf", [k1, k2])
        c.check("replaces: the replacing limit reaches 0 after 10",
                answer(r, OK, [(OK, None, 0), (OK, (10, H, ""), 0)]), r)
        r = call("conf", [k1, k2])
        c.check("replaces: 11th is OVER_LIMIT on the replacing limit only",
                answer(r, OVER, [(OK, None, 0), (OVER, (10, H, ""), 0)]), r)
        r = call("conf", [k1])
        c.check("replaces: the replaced limit was not counted meanwhile (5 -> 4)",
                answer(r, OK, [(OK, (5, H, "specific_limit"), 4)]), r)

        # ---- Several descriptors in one request ----
        r = call("conf", [D(("database", "users")), D(("to_number", "555"), hits=2),
                          D(("free", "pass")), D(("path", "/api/x"))], hits_addend=1)
        c.check("several descriptors: statuses in order, OVER_LIMIT if any one is",
                answer(r, OVER, [(OVER, (5, H, "db_users"), 0), (OK, (3, H, ""), 1),
                                 (OK, None, 0), (OK, (4, H, ""), 3)], {
                    "RateLimit-Policy": '"db_users";q=5;w=3600, "conf.to_number";q=3;w=3600, '
                                        '"conf.path_/api/*";q=4;w=3600',
                    "Retry-After": re.compile(r"[1-9]\d*")}), r)
        r = call("conf", [D(("to_number", "666"), hits=2), D(("to_number", "777"))],
                 hits_addend=3)
        c.check("hits_addend per descriptor beats the request's; the others take the "
                "request's", answer(r, OK, [(OK, (3, H, ""), 1), (OK, (3, H, ""), 0)]), r)

        # ---- Look (hits_addend 0) at an unused counter ----
        r = call("conf", [D(("to_number", "888"), hits=0)])
        c.check("hits_addend 0 on an unused counter: OK, remaining 3, duration_until_reset "
                "= time to window end",
                answer(r, OK, [(OK, (3, H, ""), 3)]), r,
                bug="duration_until_reset is the time to the end of the current window "
                    "(Envoy API: 'Duration until reset of the current limit window'; the "
                    "service: utils.CalculateReset, always > 0)")

        # ---- Per-descriptor limit override ----
        RU = ratelimit_unit_pb2
        r = call("conf", [D(("to_number", "ovr-1"), limit=(2, RU.HOUR))])
        c.check("override on a configured descriptor: its limit applies (2/hour)",
                answer(r, OK, [(OK, (2, H, ""), 1)],
                       {"RateLimit-Policy": '"conf.to_number";q=2;w=3600'}), r)
        r = call("conf", [D(("to_number", "ovr-1"), limit=(2, RU.HOUR))])
        c.check("override: counts down to 0", answer(r, OK, [(OK, (2, H, ""), 0)]), r)
        r = call("conf", [D(("to_number", "ovr-1"), limit=(2, RU.HOUR))])
        c.check("override: then OVER_LIMIT", answer(r, OVER, [(OVER, (2, H, ""), 0)]), r)
        r = call("conf", [D(("no_config_key", "v"), limit=(3, RU.DAY))])
        c.check("override on a descriptor the config does not have (known domain): applies",
                answer(r, OK, [(OK, (3, U.DAY, ""), 2)]), r)
        for name in ["SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"]:
            unit = RU.RateLimitUnit.Value(name)
            r = call("conf", [D(("unit_probe", name), limit=(100, unit))])
            c.check(f"override unit {name} ({unit}) -> current_limit.unit {U.Unit.Value(name)}",
                    answer(r, OK, [(OK, (100, U.Unit.Value(name), ""), 99)]), r)

        # ---- Windows on the same clock as the service's ----
        # The service's windows start at multiples of the unit since the Unix epoch
        # (cache key now - now % divider; utils.CalculateReset divider - now % divider),
        # as sluice's ratelimit_config.h also says; so must duration_until_reset.
        problems = []
        for unit, entries in [(H, [("to_number", "epoch")]),
                              (U.DAY, [("message_type", "marketing"), ("to_number", "epoch")])]:
            r = call("conf", [D(*entries)])
            if isinstance(r, str) or len(r.statuses) != 1:
                problems.append(f"unit {unit}: {show(r)}")
                continue
            got = seconds(r.statuses[0].duration_until_reset)
            want = window_left(unit)
            if abs(got - want) > 2 and abs(got - want) < DIVIDER[unit] - 2:
                problems.append(f"{U.Unit.Name(unit)}: duration_until_reset {got:.3f} s, the "
                                f"Unix-epoch window ends in {want:.3f} s")
        c.check("windows are aligned to the Unix epoch (as the service's and as documented "
                "in src/rls/ratelimit_config.h)", problems, r,
                bug="a window of one unit starting at a multiple of the unit since the Unix "
                    "epoch: duration_until_reset = unit - unix_now % unit")

        # ---- Second domain, files of a directory ----
        r = call("second", [D(("client", "mobile"))])
        c.check("second domain (second.yaml in a directory): its limit applies",
                answer(r, OK, [(OK, (2, H, "mobile_clients"), 1)],
                       {"RateLimit-Policy": '"mobile_clients";q=2;w=3600'}), r)
        r = call("second", [D(("database", "users"))])
        c.check("second domain does not see the first domain's limits",
                answer(r, OK, [(OK, None, 0)]), r)
        r = call("reloadable", [D(("tenant", "t1"))])
        c.check("a .yml file of the directory loads too (7/hour)",
                answer(r, OK, [(OK, (7, H, ""), 6)]), r)

        # ---- The wire, byte by byte ----
        entry = field_bytes(1, b"to_number") + field_bytes(2, b"wire-1")
        override = field_varint(1, 9) + field_varint(2, 3)  # 9 per HOUR
        descriptor = (field_bytes(1, entry) + field_bytes(2, override)
                      + field_bytes(3, field_varint(1, 2)))  # hits_addend {value: 2}
        raw = field_bytes(1, b"conf") + field_bytes(2, descriptor) + field_varint(3, 1)
        built = Request(domain="conf", hits_addend=1)
        d = built.descriptors.add()
        d.entries.add(key="to_number", value="wire-1")
        d.limit.requests_per_unit = 9
        d.limit.unit = RU.HOUR
        d.hits_addend.value = 2
        c.check("wire: SerializeToString() equals the bytes built from Envoy's field numbers",
                [] if built.SerializeToString() == raw else
                [f"generated {built.SerializeToString().hex()} hand-made {raw.hex()}"])
        raw_call = channel.unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            request_serializer=None, response_deserializer=None)
        try:
            raw_answer = raw_call(raw, timeout=5)
            p = []
            top = parse_fields(raw_answer)
            if top.get(1) != [1]:
                p.append(f"field 1 (overall_code) {top.get(1)}, want [1]")
            if len(top.get(2, [])) != 1:
                p.append(f"field 2 (statuses) {len(top.get(2, []))} times, want 1")
            else:
                st = parse_fields(top[2][0])
                cl = parse_fields(st.get(2, [b""])[0])
                dur = parse_fields(st.get(4, [b""])[0])
                if st.get(1) != [1]:
                    p.append(f"status field 1 (code) {st.get(1)}, want [1]")
                if cl.get(1) != [9] or cl.get(2) != [3]:
                    p.append(f"current_limit fields 1,2 {cl.get(1)},{cl.get(2)}, want [9],[3]")
                if st.get(3) != [7]:
                    p.append(f"status field 3 (limit_remaining) {st.get(3)}, want [7]")
                if not dur.get(1) or not 0 < dur[1][0] <= HOUR:
                    p.append(f"duration field 1 (seconds) {dur.get(1)}, want in (0, 3600]")
            c.check("wire: hand-made request decided with its override (9/hour) and "
                    "descriptor hits_addend 2; response decoded by hand", p, raw_answer)
        except grpc.RpcError as e:
            c.check("wire: hand-made request answered", [f"gRPC error {e.code()}"])

        # ---- Reload ----
        with open(reload_yaml + ".tmp", "w") as f:
            f.write(RELOAD_YAML.format(rpu=11))
        os.replace(reload_yaml + ".tmp", reload_yaml)
        sluice.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        r = None
        while time.monotonic() < deadline:
            r = call("reloadable", [D(("tenant", "t2"), hits=0)])
            if (not isinstance(r, str) and len(r.statuses) == 1
                    and r.statuses[0].current_limit.requests_per_unit == 11):
                break
            time.sleep(0.1)
        c.check("reload: after SIGHUP the rewritten file's limit (11/hour) answers",
                answer(r, OK, [(OK, (11, H, ""), 11)], check_reset=False), r)
        r = call("reloadable", [D(("tenant", "t2"))])
        c.check("reload: the new limit counts", answer(r, OK, [(OK, (11, H, ""), 10)]), r)
        r = call("conf", [D(("database", "users"), hits=0)])
        c.check("reload: counters survive (database=users still at 0)",
                answer(r, OK, [(OK, (5, H, "db_users"), 0)]), r)
        refused = [l for l in sluice.stderr() if "refused" in l]
        c.check("reload: no refusal on stderr", refused == [] or refused)

        # ---- Differences from the service's code that its README does not document ----
        r = call("conf", [D(("to_number", "big"), hits=5)])
        c.note("cost above the limit on an unused counter",
               isinstance(r, str) or r.statuses[0].limit_remaining != 0,
               "the service answers OVER_LIMIT with limit_remaining 0 and counts the 5 hits "
               "(src/limiter/base_limiter.go); sluice leaves the count and reports the "
               "remaining 3", r)
        r = call("conf", [D(("to_number", "big"))])
        c.note("after a refused cost the service stays over the limit",
               isinstance(r, str) or r.overall_code != OVER,
               "the service counted the refused 5 (INCRBY), so 1 more is OVER_LIMIT; "
               "sluice did not count them", r)
        r = call("no-such-domain", [D(("k", "v"), limit=(1, RU.HOUR))])
        c.note("override in an unknown domain",
               isinstance(r, str) or r.statuses[0].HasField("current_limit"),
               "the service's GetLimit returns no limit for an unknown domain before "
               "looking at the override; sluice applies the override", r)
        r = call("conf", [D(("shadow", "soft"), limit=(1, RU.HOUR))])
        c.note("override on a shadow_mode descriptor",
               isinstance(r, str) or r.overall_code != OVER,
               "the service's override is never in shadow mode (config_impl.go); sluice "
               "keeps the descriptor's shadow_mode", r)
        r = call("conf", [D(("database", "users"), limit=(50, RU.HOUR))])
        c.note("override keeps the configured name",
               isinstance(r, str) or r.statuses[0].current_limit.name != "",
               "the service's override has name \"\"; sluice keeps \"db_users\"", r)
        r = call("", [D(("k", "v"))])
        c.note("empty domain", not isinstance(r, str),
               "the service answers a gRPC error ('rate limit domain must not be empty')", r)
        r = call("conf", [])
        c.note("no descriptors", not isinstance(r, str),
               "the service answers a gRPC error ('rate limit descriptor list must not be "
               "empty')", r)

        # ---- Stop ----
        c.check("still running after every request (no crash)", sluice.proc.poll() is None)
        channel.close()
        sluice.proc.send_signal(signal.SIGTERM)
        try:
            code = sluice.proc.wait(timeout=15)
            c.check("SIGTERM: exits with status 0", [] if code == 0 else [f"status {code}"])
        except subprocess.TimeoutExpired:
            c.check("SIGTERM: exits within 15 s", False)
    finally:
        sluice.kill()

    print(f"\n{c.passed} passed, {len(c.failed)} failed, {len(c.notes)} notes")
    for name in c.failed:
        print(f"  failed: {name}")
    if c.failed:
        print("stderr of sluice:")
        print("\n".join("  " + l for l in sluice.stderr()))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
