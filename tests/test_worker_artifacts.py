"""What an operator deploys for processing workers, checked as far as this machine allows (no Docker
engine, no Kubernetes, no GPU here): the GPU pool's Kubernetes job template against Prefect's own
default and a real Prefect server, and the worker images against the deployments they serve."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import prefect
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.templating import apply_values

from deployments.register import GPU_POOL, PROCESS_ENV, PROCESS_POOL
from sandbox.orchestrator import REPO_ROOT
from tests.conftest import register_deployments

TEMPLATE = REPO_ROOT / "deployments" / "kubernetes" / "gpu-job-template.json"
IMAGES = {"cpu": PROCESS_POOL, "cuda": GPU_POOL}


def prefect_kubernetes_default() -> dict[str, Any]:
    """The base job template Prefect creates a Kubernetes work pool with (from its bundled worker data)."""
    data = Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    return json.loads(data.read_text())["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]


def rendered(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The job manifest a Kubernetes worker would submit: the template with defaults and ``values``."""
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    return apply_values(template["job_configuration"], {**defaults, **values})["job_manifest"]


def test_the_gpu_job_template_is_prefects_kubernetes_default_plus_a_gpu() -> None:
    template, default = json.loads(TEMPLATE.read_text()), prefect_kubernetes_default()
    assert set(default["variables"]["properties"]) <= set(template["variables"]["properties"])
    assert set(default["job_configuration"]) == set(template["job_configuration"])

    pod = rendered(template, env={"UT_WORKER_NAME": "gpu-1"})["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["image"] == "ut-video-pipeline-cuda:0.1.0" and container["env"] == {
        "UT_WORKER_NAME": "gpu-1"
    }
    assert container["envFrom"] == [{"secretRef": {"name": "ut-pipeline"}}]  # settings stay out of Prefect
    assert pod["restartPolicy"] == "Never"  # a crashed batch is handed out again, not restarted in place
    two = rendered(template, gpu_count=2)["spec"]["template"]["spec"]["containers"][0]
    assert two["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_a_prefect_server_accepts_the_gpu_pool_and_the_gpu_deployment_on_it(
    prefect_api: dict[str, str],
) -> None:
    template = json.loads(TEMPLATE.read_text())
    with temporary_settings(updates={PREFECT_API_URL: prefect_api["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            client.create_work_pool(
                WorkPoolCreate(name="k8s-gpu", type="kubernetes", base_job_template=template), overwrite=True
            )
        register_deployments(prefect_api, "--pool", "k8s-flows", "--gpu-pool", "k8s-gpu")
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool("k8s-gpu")
            deployment = client.read_deployment_by_name("ut-process/gpu")
    assert pool.type == "kubernetes" and pool.base_job_template == template  # kept as it was created
    assert deployment.work_pool_name == "k8s-gpu"
    assert deployment.job_variables == {"env": PROCESS_ENV["gpu"]}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_worker_image_serves_its_pool_with_its_device_and_pinned_versions(image: str) -> None:
    dockerfile = (REPO_ROOT / "deployments" / "docker" / f"{image}.Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", dockerfile, re.MULTILINE), "pin the base image"
    assert "pip install -r requirements.lock" in dockerfile
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", pin) for pin in re.findall(r"(nvidia-\S+)", dockerfile))
    pool = re.search(r'"--pool", "([^"]+)"', dockerfile)
    assert pool and pool.group(1) == IMAGES[image]
    env = PROCESS_ENV["cpu" if image == "cpu" else "gpu"]
    for name, value in env.items():
        assert f"{name}={value}" in dockerfile, (name, value)
