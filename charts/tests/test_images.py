"""The Dockerfiles and `make images` agree with the chart and the injector.

No Docker engine runs here, so the images are not built; what can drift is
checked instead: users, binaries, image names and tags."""

import re
import subprocess

import pytest
import yaml

from chart import CHART, REPO, render


def stages(dockerfile):
    """[(FROM line, [instructions])] of a Dockerfile."""
    out = []
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append((line, []))
        elif out:
            out[-1][1].append(line)
    return out


def proxy_uid():
    text = (REPO / "injector" / "src" / "sidecar.rs").read_text()
    return int(re.search(r"pub const PROXY_UID: i64 = (\d+);", text).group(1))


@pytest.mark.parametrize("component,uid", [
    ("proxy", lambda: proxy_uid()),
    ("injector", lambda: render().deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]),
])
def test_multi_stage_static_non_root(component, uid):
    binary = f"sidelb-{component}"
    all_stages = stages(REPO / component / "Dockerfile")
    assert len(all_stages) >= 2, "multi-stage"
    build_from, build = all_stages[0]
    assert "-alpine" in build_from, "the build stage targets musl, for a static binary"
    cargo = f"build --release --locked -p {binary} --bin {binary}"
    if component == "proxy":
        # Built guided by a profile (or plainly as a fallback) by bench/pgo.sh.
        assert any("sh bench/pgo.sh" in i for i in build)
        script = (REPO / "bench" / "pgo.sh").read_text()
        assert script.count(cargo) >= 3, "instrumented, profile-guided and plain builds"
    else:
        assert any(f"cargo {cargo}" in i for i in build)
    final_from, final = all_stages[-1]
    assert final_from == "FROM scratch", "a static binary needs nothing else"
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    expected = uid()
    assert expected != 0
    assert users == [f"{expected}:{expected}"]
    assert [i for i in final if i.startswith("ENTRYPOINT")] == [f'ENTRYPOINT ["/{binary}"]']
    assert any(i.startswith("COPY --from=build") and i.endswith(f"/{binary}") for i in final)


def test_make_images_tags_what_the_chart_deploys():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    dry_run = subprocess.run(["make", "-n", "-f", "charts/Makefile.inc", "images"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for component in ("proxy", "injector"):
        image = f"{values[component]['image']['repository']}:{app_version}"
        assert f"docker build -f {component}/Dockerfile -t {image} ." in dry_run, dry_run
    env = render().injector_env
    assert env["SIDELB_PROXY_IMAGE"] == f"{values['proxy']['image']['repository']}:{app_version}"


def test_build_context_keeps_the_workspace():
    import tomllib
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    ignored = [l.strip().rstrip("/") for l in (REPO / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    for needed in ["Cargo.toml", "Cargo.lock", *members]:
        assert needed not in ignored, f"{needed} is left out of the image build context"
