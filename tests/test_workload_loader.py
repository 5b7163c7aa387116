"""The workload loader (README.md#workload-files): every rule, error messages, a fuzz test, and ``benchsvc workloads validate``.

Every error is a :class:`~benchsvc.errors.WorkloadError` whose message is one line that starts with the file
label and names the key, e.g. ``workloads/x.toml: layout.folios: shares sum to 0.9, expected 1.0``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKLOADS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchsvc.errors import BenchsvcError, WorkloadError
from benchsvc.workload import WorkloadSpec, load_workload, parse_workload

LABEL = "workloads/x.toml"
LAYOUT = 'size = "64MiB"\nfolios = { "64KiB" = 1.0 }'
ZAP = '[[zap]]\ncall = "munmap"'


def doc(
    top: str = "",
    layout: str | None = LAYOUT,
    zaps: str | None = ZAP,
    description: str | None = 'description = "d"',
) -> str:
    parts = [p for p in (description, top) if p]
    if layout is not None:
        parts.append("[layout]\n" + layout)
    if zaps is not None:
        parts.append(zaps)
    return "\n".join(parts) + "\n"


def parse(text: str | bytes, label: str = LABEL) -> WorkloadSpec:
    raw = text.encode() if isinstance(text, str) else text
    return parse_workload(raw, name="x", label=label)


def assert_one_line_error(exc: BaseException, label: str, key: str | None = None) -> None:
    msg = str(exc)
    assert isinstance(exc, WorkloadError), repr(exc)
    assert len(msg.splitlines()) == 1, f"message is not one line: {msg!r}"
    assert msg.startswith(f"{label}: "), msg
    if key is not None:
        assert msg.startswith(f"{label}: {key}: "), f"does not name {key!r}: {msg}"


# ---------------------------------------------------------------------------------------------- valid files
def test_minimal_valid_file() -> None:
    spec = parse(doc())
    assert spec.name == "x" and spec.description == "d" and spec.tags == ()
    assert spec.size_bytes == 64 * 2**20 and spec.va_offset_bytes == 0
    assert spec.folios == ((65536, 1.0),) and spec.folio_counts() == [(65536, 1024)]
    assert spec.arrangement == "sequential" and spec.seed == 0
    assert (spec.pmd_mapped, spec.fork, spec.swap_share) == (False, False, 0.0)
    (z,) = spec.zaps
    assert (z.call, z.start_bytes, z.length_bytes, z.every_bytes, z.measure) == (
        "munmap",
        0,
        None,
        None,
        True,
    )


@pytest.mark.parametrize(
    "text,expected",
    [
        ('"4KiB"', 4096),
        ('"64KiB"', 65536),
        ('"2MiB"', 2 * 2**20),
        ('"1GiB"', 2**30),
        ('"4GiB"', 4 * 2**30),
        ("2097152", 2 * 2**20),  # an integer of bytes
        ('"2097152"', 2 * 2**20),  # a string without a unit is bytes too
        ('"2097152B"', 2 * 2**20),
    ],
)
def test_sizes_with_units(text: str, expected: int) -> None:
    spec = parse(doc(layout=f'size = {text}\nfolios = {{ "4KiB" = 1.0 }}'))
    assert spec.size_bytes == expected


def test_all_keys() -> None:
    text = doc(
        top='tags = ["canonical", "kernel"]',
        layout=(
            'size = "8MiB"\nva_offset = "32KiB"\nfolios = { "4KiB" = 0.25, "64KiB" = 0.25, "2MiB" = 0.5 }\n'
            'arrangement = "shuffled"\nseed = 7\npmd_mapped = true\nfork = true\nswap_share = 0.5'
        ),
        zaps=(
            '[[zap]]\ncall = "madvise_dontneed"\nstart = "4KiB"\nlength = "4KiB"\nevery = "64KiB"\n'
            "measure = false\n"
            '[[zap]]\ncall = "munmap"\nstart = 0\nlength = "all"\n'
            '[[zap]]\ncall = "exit"'
        ),
    )
    spec = parse(text)
    assert spec.tags == ("canonical", "kernel")
    assert spec.va_offset_bytes == 32768 and spec.seed == 7 and spec.arrangement == "shuffled"
    assert spec.folio_counts() == [(4096, 512), (65536, 32), (2 * 2**20, 2)]
    assert (spec.pmd_mapped, spec.fork, spec.swap_share) == (True, True, 0.5)
    dn, mu, ex = spec.zaps
    assert (dn.call, dn.start_bytes, dn.length_bytes, dn.every_bytes, dn.measure) == (
        "madvise_dontneed",
        4096,
        4096,
        65536,
        False,
    )
    assert dn.ranges(spec.size_bytes)[:2] == [(4096, 8192), (69632, 73728)]
    assert len(dn.ranges(spec.size_bytes)) == 128
    assert mu.ranges(spec.size_bytes) == [(0, spec.size_bytes)] and mu.measure
    assert ex.call == "exit" and ex.ranges(spec.size_bytes) == [(0, spec.size_bytes)]


def test_every_shipped_workload_loads(shipped_workloads: list[Path]) -> None:
    assert len(shipped_workloads) >= 7
    for path in shipped_workloads:
        spec = load_workload(path)
        assert spec.name == path.stem and spec.path == str(path)
    letters = {p.stem.split("-")[0] for p in shipped_workloads}
    assert set("abcdefg") <= letters  # the canonical workloads (a)-(g)


# ---------------------------------------------------------------------------------------------- errors
ERRORS: list[tuple[str, str, str | None, str | None]] = [
    # (id, text, key named at the start of the message, extra fragment)
    ("unknown-top", doc(top="bogus = 1"), "bogus", "unknown key"),
    ("unknown-top-table", doc() + "[extra]\na = 1\n", "extra", "unknown key"),
    ("unknown-layout", doc(layout=LAYOUT + '\ncolour = "red"'), "layout.colour", "unknown key"),
    ("unknown-zap", doc(zaps=ZAP + '\nlenght = "4KiB"'), "zap[0].lenght", "unknown key"),
    ("unknown-zap-2nd", doc(zaps=ZAP + "\n" + ZAP + "\nmeasured = true"), "zap[1].measured", "unknown key"),
    ("missing-description", doc(description=None), "description", "missing"),
    ("empty-description", doc(description='description = "  "'), "description", None),
    ("description-not-string", doc(description="description = 3"), "description", None),
    ("tags-not-list", doc(top='tags = "canonical"'), "tags", None),
    ("tags-not-strings", doc(top="tags = [1]"), "tags", None),
    ("missing-layout", doc(layout=None), "layout", "missing"),
    ("layout-not-table", doc(layout=None, top="layout = 1"), "layout", None),
    ("missing-size", doc(layout='folios = { "64KiB" = 1.0 }'), "layout.size", "missing"),
    ("size-kb", doc(layout='size = "64KB"\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-fraction", doc(layout='size = "1.5MiB"\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-negative-str", doc(layout='size = "-4KiB"\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-negative-int", doc(layout='size = -4096\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-float", doc(layout='size = 4096.0\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-bool", doc(layout='size = true\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-empty", doc(layout='size = ""\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-words", doc(layout='size = "big"\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-zero", doc(layout='size = 0\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("size-not-page", doc(layout='size = 6000\nfolios = { "4KiB" = 1.0 }'), "layout.size", "4KiB"),
    ("size-too-big", doc(layout='size = "8GiB"\nfolios = { "4KiB" = 1.0 }'), "layout.size", None),
    ("va-offset-2m", doc(layout=LAYOUT + '\nva_offset = "2MiB"'), "layout.va_offset", "2MiB"),
    ("va-offset-3m", doc(layout=LAYOUT + '\nva_offset = "3MiB"'), "layout.va_offset", None),
    ("va-offset-not-page", doc(layout=LAYOUT + "\nva_offset = 1000"), "layout.va_offset", None),
    ("va-offset-bad", doc(layout=LAYOUT + '\nva_offset = "32 KB"'), "layout.va_offset", None),
    ("missing-folios", doc(layout='size = "64MiB"'), "layout.folios", "missing"),
    ("folios-empty", doc(layout='size = "64MiB"\nfolios = {}'), "layout.folios", None),
    ("folios-not-table", doc(layout='size = "64MiB"\nfolios = 1.0'), "layout.folios", None),
    ("folio-8k", doc(layout='size = "64MiB"\nfolios = { "8KiB" = 1.0 }'), 'layout.folios."8KiB"', None),
    ("folio-3k", doc(layout='size = "64MiB"\nfolios = { "3KiB" = 1.0 }'), 'layout.folios."3KiB"', None),
    ("folio-4m", doc(layout='size = "64MiB"\nfolios = { "4MiB" = 1.0 }'), 'layout.folios."4MiB"', None),
    ("folio-words", doc(layout='size = "64MiB"\nfolios = { "huge" = 1.0 }'), 'layout.folios."huge"', None),
    (
        "folio-twice",
        doc(layout='size = "64MiB"\nfolios = { "64KiB" = 0.5, "65536" = 0.5 }'),
        'layout.folios."65536"',
        "twice",
    ),
    ("share-zero", doc(layout='size = "64MiB"\nfolios = { "64KiB" = 0 }'), 'layout.folios."64KiB"', None),
    ("share-big", doc(layout='size = "64MiB"\nfolios = { "64KiB" = 1.5 }'), 'layout.folios."64KiB"', None),
    ("share-neg", doc(layout='size = "64MiB"\nfolios = { "64KiB" = -1.0 }'), 'layout.folios."64KiB"', None),
    ("share-str", doc(layout='size = "64MiB"\nfolios = { "64KiB" = "all" }'), 'layout.folios."64KiB"', None),
    ("share-bool", doc(layout='size = "64MiB"\nfolios = { "64KiB" = true }'), 'layout.folios."64KiB"', None),
    (
        "share-not-whole-folios",
        doc(layout='size = "100KiB"\nfolios = { "64KiB" = 1.0 }'),
        'layout.folios."64KiB"',
        "whole number",
    ),
    (
        "share-not-whole-bytes",
        doc(layout='size = "64MiB"\nfolios = { "2MiB" = 0.3, "4KiB" = 0.7 }'),
        'layout.folios."2MiB"',
        "whole number",
    ),
    (
        "shares-sum-1.1",
        doc(layout='size = "640KiB"\nfolios = { "64KiB" = 0.6, "16KiB" = 0.5 }'),
        "layout.folios",
        "shares sum to 1.1, expected 1.0",
    ),
    ("arrangement", doc(layout=LAYOUT + '\narrangement = "random"'), "layout.arrangement", None),
    ("seed-negative", doc(layout=LAYOUT + "\nseed = -1"), "layout.seed", None),
    ("seed-float", doc(layout=LAYOUT + "\nseed = 1.5"), "layout.seed", None),
    ("seed-bool", doc(layout=LAYOUT + "\nseed = true"), "layout.seed", None),
    ("pmd-mapped-str", doc(layout=LAYOUT + '\npmd_mapped = "yes"'), "layout.pmd_mapped", None),
    ("pmd-mapped-no-2m", doc(layout=LAYOUT + "\npmd_mapped = true"), "layout.pmd_mapped", "2MiB"),
    ("fork-int", doc(layout=LAYOUT + "\nfork = 1"), "layout.fork", None),
    (
        "swap-big",
        doc(layout='size = "64MiB"\nfolios = { "4KiB" = 1.0 }\nswap_share = 1.5'),
        "layout.swap_share",
        None,
    ),
    (
        "swap-neg",
        doc(layout='size = "64MiB"\nfolios = { "4KiB" = 1.0 }\nswap_share = -0.1'),
        "layout.swap_share",
        None,
    ),
    (
        "swap-str",
        doc(layout='size = "64MiB"\nfolios = { "4KiB" = 1.0 }\nswap_share = "x"'),
        "layout.swap_share",
        None,
    ),
    ("swap-no-order0", doc(layout=LAYOUT + "\nswap_share = 0.5"), "layout.swap_share", "4KiB"),
    ("missing-zap", doc(zaps=None), "zap", "missing"),
    ("zap-empty", doc(zaps=None, top="zap = []"), "zap", None),
    ("zap-int", doc(zaps=None, top="zap = 1"), "zap", None),
    ("zap-table", doc(zaps='[zap]\ncall = "munmap"'), "zap", None),
    ("call-missing", doc(zaps="[[zap]]\nmeasure = true"), "zap[0].call", "missing"),
    ("call-unknown", doc(zaps='[[zap]]\ncall = "mmap"'), "zap[0].call", None),
    ("start-outside", doc(zaps=ZAP + '\nstart = "64MiB"'), "zap[0].start", None),
    ("start-not-page", doc(zaps=ZAP + "\nstart = 6000"), "zap[0].start", None),
    ("start-bad", doc(zaps=ZAP + '\nstart = "middle"'), "zap[0].start", None),
    ("length-past-end", doc(zaps=ZAP + '\nstart = "60MiB"\nlength = "8MiB"'), "zap[0].length", None),
    ("length-zero", doc(zaps=ZAP + "\nlength = 0"), "zap[0].length", None),
    ("length-not-page", doc(zaps=ZAP + '\nlength = "6KiB"'), "zap[0].length", None),
    ("length-bad", doc(zaps=ZAP + '\nlength = "most"'), "zap[0].length", None),
    ("every-zero", doc(zaps=ZAP + "\nevery = 0"), "zap[0].every", None),
    ("every-not-page", doc(zaps=ZAP + '\nevery = "1KiB"'), "zap[0].every", None),
    (
        "too-many-calls",
        doc(
            layout='size = "4GiB"\nfolios = { "4KiB" = 1.0 }',
            zaps=ZAP + '\nevery = "4KiB"\nlength = "4KiB"\n' + ZAP + '\nevery = "4KiB"\nlength = "4KiB"',
        ),
        "zap[1].every",
        None,
    ),
    ("measure-str", doc(zaps=ZAP + '\nmeasure = "no"'), "zap[0].measure", None),
    ("nothing-measured", doc(zaps=ZAP + "\nmeasure = false"), "zap", "measure"),
    ("after-exit", doc(zaps='[[zap]]\ncall = "exit"\n' + ZAP), "zap[1]", "exit"),
    ("exit-with-start", doc(zaps='[[zap]]\ncall = "exit"\nstart = 0'), "zap[0].start", None),
    ("exit-with-every", doc(zaps='[[zap]]\ncall = "exit"\nevery = "4KiB"'), "zap[0].every", None),
    ("not-toml", 'description = "d"\n[layout\nsize = 1\n', None, "not valid TOML"),
    ("not-toml-dup", 'description = "again"\n' + doc(), None, "not valid TOML"),
    ("empty-file", "", "description", "missing"),
]


@pytest.mark.parametrize("text,key,fragment", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error(text: str, key: str | None, fragment: str | None) -> None:
    with pytest.raises(WorkloadError) as info:
        parse(text)
    assert_one_line_error(info.value, LABEL, key)
    if fragment:
        assert fragment in str(info.value)


# A TOML key may hold control characters ("bo\ngus" = 1): the loader quotes and escapes such keys, so the
# message stays on one line.
CONTROL_KEYS = [
    ("unknown-key-newline", doc(top='"bo\\ngus" = 1'), "unknown key"),
    ("unknown-layout-key-cr", doc(layout=LAYOUT + '\n"a\\rb" = 1'), "unknown key"),
    ("unknown-zap-key-newline", doc(zaps=ZAP + '\n"x\\ny" = 1'), "unknown key"),
    ("folio-key-newline", doc(layout='size = "64MiB"\nfolios = { "6\\n4KiB" = 1.0 }'), "layout.folios"),
]


@pytest.mark.parametrize("text,fragment", [c[1:] for c in CONTROL_KEYS], ids=[c[0] for c in CONTROL_KEYS])
def test_error_key_with_control_characters(text: str, fragment: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse(text)
    assert fragment in str(info.value)
    assert_one_line_error(info.value, LABEL)


def test_shares_sum_message() -> None:
    text = doc(layout='size = "640KiB"\nfolios = { "64KiB" = 0.9 }')
    with pytest.raises(WorkloadError) as info:
        parse(text)
    assert str(info.value) == "workloads/x.toml: layout.folios: shares sum to 0.9, expected 1.0"


def test_not_utf8() -> None:
    with pytest.raises(WorkloadError) as info:
        parse(doc().encode() + b"# \xff\xfe\n")
    assert_one_line_error(info.value, LABEL)
    assert "UTF-8" in str(info.value)


def test_bad_name() -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(doc().encode(), name="no spaces/here")
    assert_one_line_error(info.value, "no spaces/here.toml")


def test_error_is_a_benchsvc_error() -> None:
    assert issubclass(WorkloadError, BenchsvcError)


def test_load_workload_labels(tmp_path: Path) -> None:
    bad = tmp_path / "bad-file.toml"
    bad.write_text(doc(layout=LAYOUT + "\nbogus = 1"))
    with pytest.raises(WorkloadError) as info:
        load_workload(bad)
    assert_one_line_error(info.value, str(bad), "layout.bogus")
    for missing in (tmp_path / "nope.toml", tmp_path):
        with pytest.raises(WorkloadError) as info:
            load_workload(missing)
        assert_one_line_error(info.value, str(missing))
    good = tmp_path / "good.toml"
    good.write_text(doc())
    assert load_workload(good).name == "good"


# ---------------------------------------------------------------------------------------------- fuzz
SHIPPED = sorted(WORKLOADS.glob("*.toml"))
SHIPPED_BYTES = [p.read_bytes() for p in SHIPPED]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check_parse(raw: bytes) -> None:
    """Either a valid spec or one WorkloadError line naming the file; never any other exception."""
    try:
        spec = parse_workload(raw, name="fuzz", label="fuzz.toml")
    except WorkloadError as exc:
        assert_one_line_error(exc, "fuzz.toml")
    else:
        assert isinstance(spec, WorkloadSpec)
        assert spec.size_bytes > 0 and spec.size_bytes % 4096 == 0 and spec.zaps
        assert math.isclose(sum(s for _, s in spec.folios), 1.0)


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SHIPPED_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup-line", "digit"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "dup-line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif op == "digit" and data:
            data[pos] = ord(draw(st.sampled_from("0123456789.-+ ")))
    return bytes(data)


@FUZZ
@given(mutated_bytes())
def test_fuzz_mutated_files(raw: bytes) -> None:
    check_parse(raw)


# Any key, control characters included (surrogates cannot be encoded).
keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
SIZE_WORDS = [
    "4KiB",
    "64KiB",
    "2MiB",
    "1GiB",
    "0",
    "8KiB",
    "3MiB",
    "1.5MiB",
    "-4KiB",
    "all",
    "4096",
    " 64 KiB ",
]
scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-10, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 0.9, 1.1]),
    st.booleans(),
    st.sampled_from(SIZE_WORDS),
    st.sampled_from(["munmap", "madvise_dontneed", "exit", "sequential", "shuffled"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(SIZE_WORDS) | keys, inner, max_size=3),
    ),
    max_leaves=8,
)
LAYOUT_KEYS = ["size", "va_offset", "folios", "arrangement", "seed", "pmd_mapped", "fork", "swap_share"]
ZAP_KEYS = ["call", "start", "length", "every", "measure"]


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def table(names: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(names) | keys, values, max_size=len(names) + 1)


@st.composite
def random_documents(draw: st.DrawFn) -> bytes:
    lines = []
    if draw(st.booleans()):
        lines.append(f"description = {toml_value(draw(st.text(max_size=10) | scalars))}")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"tags = {toml_value(draw(values))}")
    for key, v in draw(st.dictionaries(keys, values, max_size=2)).items():
        if key not in ("description", "tags", "layout", "zap"):
            lines.append(f"{json.dumps(key)} = {toml_value(v)}")
    layout = draw(table(LAYOUT_KEYS))
    if draw(st.integers(0, 4)):  # usually a plausible layout
        layout.setdefault("size", draw(st.sampled_from(SIZE_WORDS)))
        layout.setdefault("folios", {draw(st.sampled_from(SIZE_WORDS)): draw(scalars)})
    if draw(st.integers(0, 5)):
        lines.append("[layout]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in layout.items()]
    for z in draw(st.lists(table(ZAP_KEYS), max_size=3)):
        lines.append("[[zap]]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in z.items()]
    return ("\n".join(lines) + "\n").encode()


@FUZZ
@given(random_documents())
def test_fuzz_random_documents(raw: bytes) -> None:
    check_parse(raw)


# ---------------------------------------------------------------------------------------------- CLI
def validate(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "benchsvc", "workloads", "validate", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


BAD_FILES = {
    "no-layout.toml": doc(layout=None).encode(),
    "shares.toml": doc(layout='size = "640KiB"\nfolios = { "64KiB" = 0.9 }').encode(),
    "not-toml.toml": b'description = "d"\n[layout\n',
    "not-utf8.toml": b"description = '\xff'\n",
    "newline-key.toml": doc(top='"bo\\ngus" = 1').encode(),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_validate_bad_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    out = validate(path)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and out.stderr.endswith("\n"), out.stderr
    assert lines[0].startswith(f"Error: {path}: "), lines[0]


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    out = validate(tmp_path / "missing.toml")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [f"Error: {tmp_path / 'missing.toml'}: no such file"]


def test_cli_validate_shipped() -> None:
    for path in SHIPPED:
        out = validate(path)
        assert out.returncode == 0, (path, out.stderr)
        assert out.stderr == ""
    out = validate()  # no argument: every shipped workload
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert len(out.stdout.splitlines()) == len(SHIPPED)


# ---------------------------------------------------------------------------------------------- names, nesting
NAME_CHARS = st.characters(codec="utf-8") | st.sampled_from("./_-abcXYZ019")


@FUZZ
@given(st.text(NAME_CHARS, max_size=120))
def test_fuzz_names(name: str) -> None:
    """Any name: a spec under exactly the rule's names, else one WorkloadError line; never a path."""
    from benchsvc.limits import MAX_NAME_CHARS, name_problem

    good = len(name) <= MAX_NAME_CHARS and bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name))
    try:
        spec = parse_workload(doc().encode(), name=name, label="fuzz.toml")
    except WorkloadError as exc:
        assert not good and name_problem(name) is not None
        assert_one_line_error(exc, "fuzz.toml")
        assert str(exc).endswith("rename the file")
    else:
        assert good and spec.name == name and "/" not in name and not name.startswith(".")


NEST_OPEN = {"array": ("[", "]"), "inline": ("{a = ", "}"), "dotted": ("a.", ""), "header": ("", "")}


@FUZZ
@given(
    st.lists(st.sampled_from(sorted(NEST_OPEN)), min_size=1, max_size=3),
    st.integers(1, 3000),
)
def test_fuzz_nesting(shapes: list[str], depth: int) -> None:
    """Tables, arrays and dotted keys nested to any depth: a WorkloadError line, never a RecursionError or a
    parse whose memory grows with the square of the depth."""
    from benchsvc.limits import MAX_TOML_DEPTH

    parts = []
    for shape in shapes:
        if shape == "header":
            parts.append("[" + ".".join(["t"] * depth) + "]\nk = 1")
        elif shape == "dotted":
            parts.append("x" + ".x" * depth + " = 1")
        else:
            opener, closer = NEST_OPEN[shape]
            parts.append("x = " + opener * depth + ("1" if shape == "inline" else "") + closer * depth)
    text = doc() + "\n".join(parts) + "\n"
    with pytest.raises(WorkloadError) as info:
        parse(text)
    assert_one_line_error(info.value, LABEL)
    if depth > MAX_TOML_DEPTH:  # past the limit by the nesting alone (a header or a key adds a level or two)
        assert f"more than the {MAX_TOML_DEPTH} levels" in str(info.value)
