"""The logs component under Pulumi mocks: VCN flow logs and the models bucket's access logs."""

from __future__ import annotations

import pytest

from tests.infra.harness import OCI_STACKS, inputs, setting, stack_run


def sources(stack: str) -> list[dict]:
    """Each service log's source, checked to be enabled and in the stack's one log group."""
    result = stack_run(stack)
    group = result.one("oci:Logging/logGroup:LogGroup")
    logs = [inputs(log) for log in result.of_type("oci:Logging/log:Log")]
    for log in logs:
        assert log["logGroupId"] == group.id and log["logType"] == "SERVICE" and log["isEnabled"] is True
        assert log["retentionDuration"] == (180 if setting(stack, "env") == "prod" else 30)
        assert log["configuration"]["source"]["sourceType"] == "OCISERVICE"
    return [log["configuration"]["source"] for log in logs]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_every_subnet_has_a_flow_log_of_all_its_traffic(stack):
    subnets = {subnet.id for subnet in stack_run(stack).of_type("oci:Core/subnet:Subnet")}
    flows = [s for s in sources(stack) if s["service"] == "flowlogs"]
    assert sorted(s["resource"] for s in flows) == sorted(subnets)
    assert {s["category"] for s in flows} == {"all"}


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_model_bucket_writes_and_reads_are_logged(stack):
    models = f"mis-{stack}-models"
    assert any(inputs(b)["name"] == models for b in stack_run(stack).of_type("oci:ObjectStorage/bucket:Bucket"))
    bucket_logs = [s for s in sources(stack) if s["service"] == "objectstorage"]
    assert sorted((s["resource"], s["category"]) for s in bucket_logs) == [(models, "read"), (models, "write")]
