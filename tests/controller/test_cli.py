"""`routeserver validate` / `run`: invalid configuration is refused naming file, document and field."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import cli
from tests.support.crd_cases import EXAMPLES_DIR

SERVER = """\
apiVersion: routeserver.dev/v1alpha1
kind: RouteServer
metadata:
  name: vip
spec:
  asn: 64512
  routerID: 10.0.0.1
  importPolicy:
    allowedPrefixes:
      - prefix: 203.0.113.0/24
        le: 32
"""

PEER = """\
apiVersion: routeserver.dev/v1alpha1
kind: RouteServerPeer
metadata:
  name: {name}
spec:
  routeServerRef:
    name: vip
  peerAddress: {address}
  peerASN: 65001
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def validate(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, str]:
    args = ["validate"]
    for path in paths:
        args += ["-f", str(path)]
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_the_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-f", str(EXAMPLES_DIR), "-R"]) == 0
    assert "configuration valid" in capsys.readouterr().out


def test_invalid_field_names_file_document_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_peer = PEER.format(name="fw-a", address="224.0.0.5") + "  timers:\n    holdTimeSeconds: 2\n"
    path = write(tmp_path, "vip.yaml", SERVER + "---\n" + bad_peer)
    code, err = validate(capsys, path)
    assert code == 2
    assert (
        f"{path}: document 2 (RouteServerPeer fw-a): spec.peerAddress: Value error, peerAddress must be"
        in err
    )
    assert f"{path}: document 2 (RouteServerPeer fw-a): spec.timers.holdTimeSeconds:" in err
    assert "RFC 4271 §4.2" in err
    assert "would not start" in err


def test_unknown_fields_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "rs.yaml", SERVER.replace("  asn: 64512\n", "  asn: 64512\n  asnn: 1\n"))
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: document 1 (RouteServer vip): spec.asnn: Extra inputs are not permitted" in err


def test_nested_list_fields_are_named_with_their_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "rs.yaml", SERVER.replace("le: 32", "le: 33"))
    code, err = validate(capsys, path)
    assert code == 2
    assert "spec.importPolicy.allowedPrefixes[0].le: Value error, le must be at most 32" in err


def test_yaml_syntax_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "broken.yaml", SERVER + "  listenPort: [\n")
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: line" in err and "invalid YAML" in err


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("kind: RouteServers\nmetadata: {name: x}\n", "kind: unsupported kind 'RouteServers'"),
        ("- a\n- b\n", "expected a mapping"),
        (
            "apiVersion: routeserver.dev/v1alpha1\nkind: RouteServer\nspec: {asn: 1}\n",
            "metadata.name: required",
        ),
        (
            "apiVersion: routeserver.dev/v1alpha1\nkind: RouteServerSession\nmetadata: {name: s}\n",
            "written by agents",
        ),
        (
            "apiVersion: v2\nkind: RouteServer\nmetadata: {name: x}\nspec: {asn: 1}\n",
            "apiVersion: Input should be",
        ),
    ],
)
def test_document_shape_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: str, message: str
) -> None:
    path = write(tmp_path, "doc.yaml", "---\n" + document)
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: document 1" in err and message in err


def test_duplicate_names_name_both_places(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = write(tmp_path, "a.yaml", SERVER)
    two = write(tmp_path, "b.yaml", SERVER)
    code, err = validate(capsys, one, two)
    assert code == 2
    assert (
        f"{two}: document 1 (RouteServer vip): metadata.name: RouteServer 'vip' is already defined in {one}"
        in err
    )


def test_unresolved_references_point_at_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan = PEER.format(name="orphan", address="10.0.0.2").replace("name: vip", "name: nope")
    locked = PEER.format(name="locked", address="10.0.0.3") + "  authSecretRef:\n    name: md5\n"
    path = write(tmp_path, "peers.yaml", SERVER + "---\n" + orphan + "---\n" + locked)
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: document 2 (RouteServerPeer orphan): spec.routeServerRef.name: RouteServer 'nope'" in err
    assert (
        f"{path}: document 3 (RouteServerPeer locked): spec.authSecretRef: Secret default/md5 not found"
        in err
    )


def test_secrets_come_from_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = PEER.format(name="locked", address="10.0.0.3") + "  authSecretRef:\n    name: md5\n"
    secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: md5\nstringData:\n  password: s3cret\n"
    path = write(tmp_path, "all.yaml", SERVER + "---\n" + locked + "---\n" + secret)
    code, _ = validate(capsys, path)
    assert code == 0


def test_bad_base64_in_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: md5\ndata:\n  password: '***'\n"
    path = write(tmp_path, "secret.yaml", secret)
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: document 1 (Secret md5): data.password: not valid base64" in err


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = validate(capsys, tmp_path / "absent.yaml")
    assert code == 2 and "no such file or directory" in err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`run` configures the root logger for the process; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_run_refuses_invalid_configuration_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", PEER.format(name="fw", address="10.0.0.2"))
    # Port 1 on an address that is not ours: it would fail if anything tried to start.
    code = cli.main(["run", "-f", str(path), "--admin-address", "203.0.113.1:1", "--no-bfd"])
    assert code == 2
    err = capsys.readouterr().err
    assert "spec.routeServerRef.name: RouteServer 'vip' does not exist" in err
    assert "configuration invalid; not starting" in err


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-f", "x", "--node-label", "novalue"],
        ["run", "-f", "x", "--router-id", "0.0.0.0"],
        ["run", "-f", "x", "--router-id", "::1"],
        ["run"],
    ],
)
def test_argument_errors_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().out


def test_run_route_protocol_defaults_to_ours_and_refuses_kernel_protocols(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.cli import build_parser
    from controller.writers.netlink import DEFAULT_PROTOCOL

    monkeypatch.delenv("KRS_ROUTE_PROTOCOL", raising=False)
    args = build_parser().parse_args(["run", "-f", "x.yaml"])
    assert args.route_protocol == DEFAULT_PROTOCOL
    monkeypatch.setenv("KRS_ROUTE_PROTOCOL", "200")
    assert build_parser().parse_args(["run", "-f", "x.yaml"]).route_protocol == 200
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-f", "x.yaml", "--route-protocol", "4"])
    assert "kernel" in capsys.readouterr().err
