"""k3s's registries.yaml read without a host: the YAML subset, the BuildKit tables, nerdctl's hosts_dir, the plan."""

from __future__ import annotations

import base64
import subprocess

import pytest
import tomllib
from pyinfra_nerdctl import layout
from pyinfra_nerdctl.deploys import rendering
from pyinfra_nerdctl.deploys.changes import managed_files, plan_changes
from pyinfra_nerdctl.deploys.k3s_registries import NO_K3S_REGISTRIES, RegistriesError, k3s_registries
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import resolve_settings
from pyinfra_nerdctl.deploys.yaml_subset import Plain, YamlError, read_yaml
from pyinfra_nerdctl.facts import BuildHostState
from pyinfra_nerdctl.facts.state import k3s_registries_command
from states import converged_state

# The shapes of k3s's documentation (docs.k3s.io, "Private Registry Configuration"), all at once.
DOCUMENTED = """---
# written by hand, as the k3s docs show it
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"              # plain HTTP, a port
      - "https://harbor.example.com/v2/proxy.docker.io"   # a path under /v2 (harbor's proxy cache)
      - registry.example.com:5000            # no scheme: https
      - docker.io                            # the registry itself, tried last anyway
  "*":
    endpoint:
      - "https://everything.example.com"
  quay.io:
    endpoint: ["https://quay-mirror.example.com"]
    rewrite:
      "^(.*)": "quay/$1"
  plain.example.com:5000:
    endpoint:
    - http://plain.example.com:5000   # k3s's way to say a registry is plain HTTP
configs:
  "registry.example.com:5000":
    auth:
      username: builder
      password: 'it''s # not a comment'
    tls:
      cert_file: /etc/ssl/registry/client.pem
      key_file: /etc/ssl/registry/client.key
      ca_file: /etc/ssl/registry/ca.pem
  harbor.example.com:
    tls:
      insecure_skip_verify: true
  "*":
    tls:
      ca_file: /etc/ssl/everyone.pem
"""


def test_the_documented_shapes_become_buildkits_tables():
    found = k3s_registries(DOCUMENTED, certs_dir=True)

    assert found.tables == {
        "registry.example.com:5000": {
            "ca": ["/etc/ssl/registry/ca.pem"],
            "keypair": [{"key": "/etc/ssl/registry/client.key", "cert": "/etc/ssl/registry/client.pem"}],
        },
        "harbor.example.com": {"insecure": True},
        "127.0.0.1:5000": {"http": True},
        "docker.io": {"mirrors": ["127.0.0.1:5000", "harbor.example.com/proxy.docker.io", "registry.example.com:5000"]},
        "plain.example.com:5000": {"http": True},
    }
    assert found.hosts_dir == (layout.K3S_CERTS_DIR, "/etc/containerd/certs.d", "/etc/docker/certs.d")


def test_what_buildkit_cannot_say_is_warned_about_by_registry():
    warnings = "\n".join(k3s_registries(DOCUMENTED, certs_dir=False).warnings)

    assert 'configs."registry.example.com:5000".auth' in warnings and "~/.docker/config.json" in warnings
    assert 'mirrors."quay.io".rewrite' in warnings
    assert 'mirrors."*": BuildKit has no mirror for every registry' in warnings
    assert 'configs."*".tls' in warnings
    assert "password" not in warnings and "builder" not in warnings  # credentials stay out of logs


def test_plain_http_registry_named_by_itself_is_plain_http_and_no_mirror_of_itself():
    found = k3s_registries(
        "mirrors:\n  plain.example.com:5000:\n    endpoint:\n    - http://plain.example.com:5000\n", False
    )
    assert found.tables == {"plain.example.com:5000": {"http": True}}


@pytest.mark.parametrize(
    ("endpoint", "named", "http"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", True),  # k3s: loopback with an odd port is plain HTTP
        ("localhost:443", "localhost:443", False),
        ("https://127.0.0.1:5443", "127.0.0.1:5443", False),  # BuildKit's own default there is plain HTTP
        ("https://mirror.example.com/v2/", "mirror.example.com", None),
        ("mirror.example.com/v2/hub", "mirror.example.com/hub", None),
    ],
)
def test_endpoints_are_read_as_k3s_reads_them(endpoint, named, http):
    found = k3s_registries(f"mirrors:\n  docker.io:\n    endpoint: [{endpoint!r}]\n", False)
    assert found.tables["docker.io"] == {"mirrors": [named]}
    assert found.tables.get(named.split("/")[0], {}).get("http") is http
    assert found.warnings == ()


def test_an_endpoint_whose_path_replaces_v2_is_left_out():
    found = k3s_registries('mirrors:\n  docker.io:\n    endpoint: ["https://m.example.com/hub"]\n', False)
    assert found.tables == {}
    (warning,) = found.warnings
    assert 'mirrors."docker.io"' in warning and "/hub" in warning


def test_one_host_both_plain_and_tls_keeps_the_first_and_says_so():
    found = k3s_registries(
        "mirrors:\n  docker.io:\n    endpoint: [https://127.0.0.1:5443, http://127.0.0.1:5443]\n", False
    )
    assert found.tables["127.0.0.1:5443"] == {"http": False}
    assert "https kept" in found.warnings[0]


def test_a_client_certificate_without_its_key_is_left_out():
    found = k3s_registries("configs:\n  r.example.com:\n    tls:\n      cert_file: /c.pem\n      key_file:\n", False)
    assert found.tables == {}
    assert "needs both cert_file and key_file" in found.warnings[0]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("mirrors:\n  docker.io:\n    endpoint: http://127.0.0.1:5000\n", 'mirrors."docker.io".endpoint'),
        ('configs:\n  r:\n    tls:\n      insecure_skip_verify: "true"\n', "insecure_skip_verify"),
        ("mirrors: [docker.io]\n", "mirrors must be a mapping"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(text, names):
    with pytest.raises(RegistriesError, match=names.replace(".", r"\.").replace('"', '"')):
        k3s_registries(text, False)


def test_unknown_keys_are_warned_about_not_refused():
    found = k3s_registries("mirrors:\n  docker.io:\n    endpoints: [x]\nmirror: {}\n", False)
    assert found.tables == {}
    assert [warning.split(" is ")[0] for warning in found.warnings] == [
        "registries.yaml: mirror",
        'registries.yaml: mirrors."docker.io".endpoints',
    ]


def test_no_file_and_an_empty_file_add_nothing():
    assert k3s_registries(None, False) == NO_K3S_REGISTRIES
    assert k3s_registries("# nothing yet\n", False) == NO_K3S_REGISTRIES


def test_the_yaml_reader_takes_the_usual_forms():
    assert read_yaml("a:\n- 'x'\n- \"y\\tz\"\nb: [p, 'q r', \"s\",]\nc:\nd: ~\ne: {}\n") == {
        "a": ["x", "y\tz"],
        "b": ["p", "q r", "s"],
        "c": None,
        "d": "~",
        "e": {},
    }
    flag = read_yaml("f: yes\n")["f"]
    assert isinstance(flag, Plain) and flag == "yes"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("a: &anchor x\n", 1, "anchors"),
        ("a: *anchor\n", 1, "aliases"),
        ("a: |\n  text\n", 1, "block scalars"),
        ("a: !!str x\n", 1, "tags"),
        ("a: {b: c}\n", 1, "flow mappings"),
        ("a:\n  - b: c\n", 2, "only strings are read in a list"),
        ("a: 1\na: 2\n", 2, "appears twice"),
        ("a:\n    b: 1\n  c: 2\n", 3, "indented unlike"),
        ("a:\n\tb: 1\n", 2, "tab"),
        ('a: "open\n', 1, "does not end"),
        ("a: 1\n---\nb: 2\n", 2, "one document"),
        ("just text\n", 1, "is not `key: value`"),
    ],
)
def test_the_yaml_reader_refuses_what_it_does_not_read_naming_the_line(text, line, says):
    with pytest.raises(YamlError, match=f"^line {line}: .*{says}"):
        read_yaml(text)


K3S = resolve_settings(
    {}.get, {"containerd_address": "/run/k3s/containerd/containerd.sock", "containerd_namespace": "k8s.io"}
)
MIRRORED = k3s_registries('mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:5000"]\n', certs_dir=True)


def test_buildkitd_toml_gets_k3s_tables_and_an_explicit_registry_table_wins_whole():
    explicit = resolve_settings(
        {}.get,
        {
            "buildkitd_config": {
                "registry": {"docker.io": {"mirrors": ["mine.example.com"]}, "x.example.com": {"http": True}}
            }
        },
    )
    assert tomllib.loads(rendering.buildkitd_toml(K3S, MIRRORED))["registry"] == {
        "127.0.0.1:5000": {"http": True},
        "docker.io": {"mirrors": ["127.0.0.1:5000"]},
    }
    assert tomllib.loads(rendering.buildkitd_toml(explicit, MIRRORED))["registry"] == {
        "127.0.0.1:5000": {"http": True},
        "docker.io": {"mirrors": ["mine.example.com"]},
        "x.example.com": {"http": True},
    }
    assert "registry" not in tomllib.loads(rendering.buildkitd_toml(K3S))


def test_nerdctl_looks_in_k3s_certs_d_first_unless_hosts_dir_is_set():
    assert tomllib.loads(rendering.nerdctl_toml(K3S, MIRRORED))["hosts_dir"] == [
        layout.K3S_CERTS_DIR,
        *layout.NERDCTL_HOSTS_DIRS,
    ]
    own = resolve_settings({}.get, {"nerdctl_config": {"hosts_dir": ["/etc/certs.d"]}})
    assert tomllib.loads(rendering.nerdctl_toml(own, MIRRORED))["hosts_dir"] == ["/etc/certs.d"]
    assert "hosts_dir" not in tomllib.loads(rendering.nerdctl_toml(K3S, k3s_registries(DOCUMENTED, False)))


def converged_with(settings, k3s) -> dict:
    state = converged_state(settings)
    for file in managed_files(settings, (NERDCTL, BUILDKIT), k3s):
        state["paths"][file.path]["sha256"] = file.sha256
    return state


def test_a_changed_k3s_file_rewrites_the_configs_and_restarts_a_running_buildkit_drained():
    state = converged_with(K3S, NO_K3S_REGISTRIES)
    changes = plan_changes(K3S, state, (NERDCTL, BUILDKIT), MIRRORED)

    assert {file.path for file in changes.files} == {layout.BUILDKIT_CONFIG, layout.NERDCTL_CONFIG}
    assert changes.restart_service and changes.wait_for_builds


def test_an_unchanged_k3s_file_changes_nothing():
    changes = plan_changes(K3S, converged_with(K3S, MIRRORED), (NERDCTL, BUILDKIT), MIRRORED)
    assert not changes.files and not changes.restart_service


def test_the_fact_carries_the_file_encoded_and_nothing_without_it():
    text = 'mirrors:\n  "docker.io":\n    endpoint: ["http://127.0.0.1:5000"]  # group=yes\n'
    encoded = base64.b64encode(text.encode()).decode()
    state = BuildHostState().process([f"k3s_registries={encoded}", "k3s_certs_d=yes"])
    assert (state["k3s_registries"], state["k3s_certs_d"], state["group_exists"]) == (text, True, False)
    absent = BuildHostState().process([])
    assert (absent["k3s_registries"], absent["k3s_certs_d"]) == (None, False)
    assert k3s_registries_command() in BuildHostState().command()
    assert layout.K3S_REGISTRIES not in BuildHostState().command(k3s_registries=False)


# --- hosts.toml files written by hand in k3s's certs.d (containerd's docs/hosts.md) ---------------------------

CERTS_D = layout.K3S_CERTS_DIR
GENERATED = '# File generated by k3s. DO NOT EDIT.\nserver = "https://registry-1.docker.io/v2"\n'
# A mirror on plain HTTP, then one over TLS with a path of its own; the registry itself last (containerd's order).
GHCR = """# mirrors for ghcr.io, by hand
server = "https://ghcr.io"

[host."http://10.0.0.5:5000"]
  capabilities = ["pull", "resolve"]

[host."https://cache.example.com/v2/ghcr"]
  capabilities = ["pull", "resolve"]
  override_path = true
  ca = "cache-ca.pem"
"""
# A registry of its own CA and client certificate; a bare client file holds both the certificate and the key.
PRIVATE = """server = "https://reg.example.com:5000"
ca = ["/etc/ssl/reg/ca.pem", "extra-ca.pem"]
client = [["/etc/ssl/reg/client.pem", "/etc/ssl/reg/client.key"], "/etc/ssl/reg/both.pem"]
skip_verify = false
"""


def test_a_hand_written_mirror_with_an_http_host_becomes_buildkits_mirrors_in_the_files_order():
    found = k3s_registries(None, True, {"ghcr.io": GHCR})

    assert found.tables == {
        "10.0.0.5:5000": {"http": True},
        "cache.example.com": {"ca": [f"{CERTS_D}/ghcr.io/cache-ca.pem"]},  # relative: from the file's folder
        "ghcr.io": {"mirrors": ["10.0.0.5:5000", "cache.example.com/ghcr"]},
    }
    assert found.warnings == ()


def test_a_hand_written_ca_and_client_pair_become_the_registrys_tls_keys():
    found = k3s_registries(None, True, {"reg.example.com:5000": PRIVATE})

    assert found.tables == {
        "reg.example.com:5000": {
            "ca": ["/etc/ssl/reg/ca.pem", f"{CERTS_D}/reg.example.com:5000/extra-ca.pem"],
            "keypair": [
                {"key": "/etc/ssl/reg/client.key", "cert": "/etc/ssl/reg/client.pem"},
                # Go's TLS (BuildKit's too) finds the key among the certificate file's blocks, as containerd does.
                {"key": "/etc/ssl/reg/both.pem", "cert": "/etc/ssl/reg/both.pem"},
            ],
        }
    }
    assert found.warnings == ()


@pytest.mark.parametrize(
    "text",
    [
        '[host."http://10.0.0.5:5000"\n',  # not TOML
        'server = 5\n[host."http://10.0.0.5:5000"]\n',
        '[host."http://10.0.0.5:5000"]\n  capabilities = ["pull", "fetch"]\n',
        '[host."http://10.0.0.5:5000"]\n  client = [["/c.pem"]]\n',
        '[host."http://10.0.0.5:5000"]\n  skip_verify = "yes"\n',
    ],
)
def test_a_file_containerd_cannot_read_leaves_that_registry_to_buildkits_defaults_and_says_so(text):
    found = k3s_registries(None, True, {"ghcr.io": text, "quay.io": GHCR.replace("ghcr", "quay")})

    assert "ghcr.io" not in found.tables and found.tables["quay.io"]["mirrors"][0] == "10.0.0.5:5000"
    (warning,) = found.warnings
    assert warning.startswith(f"{CERTS_D}/ghcr.io/hosts.toml (ghcr.io)")
    assert warning.endswith("containerd cannot read it either: ghcr.io keeps BuildKit's defaults")


def test_registries_yaml_wins_over_a_hand_written_file_for_the_same_registry_and_says_so():
    yaml = 'mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:5000"]\n'
    hand_written = {"docker.io": '[host."https://elsewhere.example.com"]\n', "ghcr.io": GHCR}
    found = k3s_registries(yaml, True, hand_written)

    assert found.tables["docker.io"] == {"mirrors": ["127.0.0.1:5000"]}
    assert found.tables["ghcr.io"]["mirrors"] == ["10.0.0.5:5000", "cache.example.com/ghcr"]  # filled in
    assert "elsewhere.example.com" not in found.tables
    (warning,) = found.warnings
    assert f"{CERTS_D}/docker.io/hosts.toml: registries.yaml configures docker.io too and wins" in warning


def test_an_explicit_buildkitd_config_table_wins_over_a_hand_written_file():
    explicit = resolve_settings({}.get, {"buildkitd_config": {"registry": {"ghcr.io": {"mirrors": ["mine"]}}}})
    registries = tomllib.loads(rendering.buildkitd_toml(explicit, k3s_registries(None, True, {"ghcr.io": GHCR})))[
        "registry"
    ]
    assert registries["ghcr.io"] == {"mirrors": ["mine"]}
    assert registries["10.0.0.5:5000"] == {"http": True}


def test_what_buildkit_cannot_say_in_a_hosts_toml_is_warned_about_naming_the_file_and_registry():
    text = """server = "https://ghcr.io"
dial_timeout = "5s"
[host."https://push.example.com"]
  capabilities = ["push"]
[host."https://headers.example.com"]
  header = {x-token = "not logged"}
[host."https://root.example.com/api"]
  override_path = true
[host."https://appended.example.com/x"]
[host."https://odd.example.com"]
  mirror = true
"""
    found = k3s_registries(None, True, {"ghcr.io": text, "_default": GHCR})

    # containerd asks appended.example.com/x/v2 for the API, which BuildKit cannot say either.
    assert found.tables == {"ghcr.io": {"mirrors": ["headers.example.com", "odd.example.com"]}}
    where = f"{CERTS_D}/ghcr.io/hosts.toml (ghcr.io)"
    assert [warning.removeprefix(where).partition(": ")[0] for warning in found.warnings[:-1]] == [
        ' [host."https://push.example.com"]',
        ' [host."https://headers.example.com"]',
        ' [host."https://root.example.com/api"]',
        ' [host."https://appended.example.com/x"]',
        ' [host."https://odd.example.com"]',
        "",  # the top level, last as containerd reads it
    ]
    warnings = "\n".join(found.warnings)
    assert "without the pull capability" in warnings and "header: BuildKit sends no headers" in warnings
    assert "not logged" not in warnings
    assert "containerd uses /api as it is" in warnings and "containerd uses /x/v2 as it is" in warnings
    assert "mirror is not a key containerd documents" in warnings and "dial_timeout: BuildKit has no" in warnings
    assert found.warnings[-1].startswith(f"{CERTS_D}/_default/hosts.toml: containerd's settings for every registry")


def test_containerds_host_port_folder_wins_over_the_host_colon_port_one():
    found = k3s_registries(
        None,
        True,
        {"r.example.com:5000": '[host."https://a.example.com"]\n', "r.example.com_5000_": '[host."b.example.com"]\n'},
    )
    assert found.tables == {"r.example.com:5000": {"mirrors": ["b.example.com"]}}
    assert "containerd reads r.example.com_5000_/hosts.toml for r.example.com:5000" in found.warnings[0]


def test_a_mirror_host_shared_with_registries_yaml_keeps_the_yamls_settings():
    yaml = 'mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:5000"]\n'
    found = k3s_registries(yaml, True, {"ghcr.io": '[host."https://127.0.0.1:5000"]\n'})
    assert found.tables["127.0.0.1:5000"] == {"http": True}
    assert found.tables["ghcr.io"] == {"mirrors": ["127.0.0.1:5000"]}
    (warning,) = found.warnings
    assert warning.startswith(f"{CERTS_D}/ghcr.io/hosts.toml (ghcr.io): 127.0.0.1:5000's http differs from")


def test_a_new_hand_written_file_rewrites_buildkits_config_and_an_unchanged_one_changes_nothing():
    hand_written = k3s_registries(None, True, {"ghcr.io": GHCR})
    state = converged_with(K3S, k3s_registries(None, True))
    changes = plan_changes(K3S, state, (NERDCTL, BUILDKIT), hand_written)
    assert {file.path for file in changes.files} == {layout.BUILDKIT_CONFIG} and changes.restart_service
    again = plan_changes(K3S, converged_with(K3S, hand_written), (NERDCTL, BUILDKIT), hand_written)
    assert not again.files and not again.restart_service


def test_the_fact_sends_the_hand_written_files_and_not_the_ones_k3s_wrote(tmp_path):
    files = {
        "docker.io": GENERATED,  # k3s's own: the YAML says the same
        "ghcr.io": GHCR,
        "r.example.com_5000_": '[host."https://a.example.com"]',  # no newline at the end
        "empty": "",
        "# odd name\nk3s_certs_d=no": "x = 1\n",
    }
    for folder, text in files.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "hosts.toml").write_text(text)
    (tmp_path / "certs-only").mkdir()
    (tmp_path / "certs-only" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    command = k3s_registries_command(str(tmp_path / "registries.yaml"), str(tmp_path))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    state = BuildHostState().process(output.splitlines())

    assert state["k3s_hosts_toml"] == {folder: text for folder, text in files.items() if folder != "docker.io"}
    assert state["k3s_certs_d"] and state["k3s_registries"] is None
    assert BuildHostState().process([])["k3s_hosts_toml"] == {}
