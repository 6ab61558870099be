"""How the Ray executor reads its address and how a loopback head is launched (issue #24 item 4): ``ray://`` is the
Ray client (relayed runs), anything else a driver; only a head on a loopback node address hands its processes
Ray's multi-node switch off (its per-client servers would otherwise dial the GCS at the machine's external
address), never a worker node (Ray refuses to start one with it off) nor a head on a real address."""

from __future__ import annotations

import pytest

from vigil.trainer.ray_executor import is_client_address
from vigil.trainer.ray_node import loopback_head_env

pytestmark = pytest.mark.unit

OFF = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.mark.parametrize(
    ("address", "client"),
    [("ray://127.0.0.1:10001", True), ("ray://vigil-ray-head:10001", True), ("127.0.0.1:6379", False),
     ("ray-head:6379", False)],
)  # fmt: skip
def test_a_ray_url_is_the_client_path(address: str, client: bool) -> None:
    assert is_client_address(address) is client


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["start", "--head", "--node-ip-address=127.0.0.1", "--port=0"], OFF),
        (["start", "--head", "--node-ip-address", "localhost"], OFF),
        (["start", "--head", "--node-ip-address=10.0.0.5"], {}),
        (["start", "--head"], {}),  # Ray picks the address: not ours to change
        (["start", "--address=127.0.0.1:6379", "--node-ip-address=127.0.0.1"], {}),  # a worker node
    ],
)
def test_only_a_loopback_head_turns_multi_node_resolution_off(argv: list[str], env: dict[str, str]) -> None:
    assert loopback_head_env(argv) == env


def test_a_starting_node_waits_past_rays_30_s_for_its_raylet_to_register(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private import services

    from vigil.trainer.ray_node import patient_registration

    answers: list[object] = [RuntimeError("not yet"), RuntimeError("not yet"), {"node_id": "n1"}]

    def registered_on_the_third_look(*_args: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(services, "get_node", registered_on_the_third_look)
    patient_registration(30.0)
    assert services.get_node("gcs", "n1") == {"node_id": "n1"} and answers == []

    monkeypatch.setattr(services, "get_node", lambda *_args: (_ for _ in ()).throw(RuntimeError("never")))
    patient_registration(0.2)
    with pytest.raises(RuntimeError, match="never"):
        services.get_node("gcs", "n1")  # past its own wait the error reaches Ray's loop, which then gives up
