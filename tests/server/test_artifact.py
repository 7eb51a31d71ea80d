"""server/artifact.py: what an unpacked ADS artifact says, read leniently, and runtime.yaml and
score.py as this server writes them."""

from __future__ import annotations

import yaml

from server.artifact import inference_conda_env, read_schema, schema_feature_names, score_py, set_inference_env


def test_schemas_read_as_json_or_none(tmp_path):
    (tmp_path / "input_schema.json").write_text('{"schema": [{"name": "a"}, {"name": 2}], "version": "1.1"}')
    (tmp_path / "output_schema.json").write_text("not json")
    assert schema_feature_names(read_schema(tmp_path, "input")) == ["a", "2"]
    assert read_schema(tmp_path, "output") is None and read_schema(tmp_path / "missing", "input") is None
    for schema in (None, [], {"schema": None}, {"schema": [{"type": "float"}]}, {"schema": []}):
        assert schema_feature_names(schema) is None


def test_the_inference_environment_is_text_and_empty_where_nothing_says_it(tmp_path):
    (tmp_path / "runtime.yaml").write_text(
        "MODEL_DEPLOYMENT:\n  INFERENCE_CONDA_ENV:\n    INFERENCE_PYTHON_VERSION: 3.10\n")
    assert inference_conda_env(tmp_path) == {"INFERENCE_PYTHON_VERSION": "3.10"}
    (tmp_path / "model.joblib").write_bytes(b"")
    assert inference_conda_env(tmp_path / "model.joblib") == {}  # a native model file says nothing
    (tmp_path / "runtime.yaml").write_text("- [unclosed")
    assert inference_conda_env(tmp_path) == {}


def test_set_inference_env_names_a_slug_or_a_published_pack(tmp_path):
    (tmp_path / "runtime.yaml").write_text(yaml.safe_dump({"MODEL_ARTIFACT_VERSION": "3.0"}))
    set_inference_env(tmp_path, "generalml_p311_cpu_x86_64_v1", "3.11")
    assert inference_conda_env(tmp_path) == {
        "INFERENCE_ENV_PATH": "", "INFERENCE_ENV_SLUG": "generalml_p311_cpu_x86_64_v1",
        "INFERENCE_ENV_TYPE": "data_science", "INFERENCE_PYTHON_VERSION": "3.11"}
    set_inference_env(tmp_path, "oci://bucket@namespace/packs/mine", "3.12")
    assert inference_conda_env(tmp_path) == {
        "INFERENCE_ENV_PATH": "oci://bucket@namespace/packs/mine", "INFERENCE_ENV_SLUG": "",
        "INFERENCE_ENV_TYPE": "published", "INFERENCE_PYTHON_VERSION": "3.12"}


def test_score_py_holds_the_frameworks_lines_and_compiles(tmp_path):
    text = score_py("model.bin", "mine", "import pickle\n\nwith open(path, 'rb') as f:\n    return pickle.load(f)",
                    "table = table * 2")
    compile(text, "score.py", "exec")
    assert '\n    import pickle\n\n    with open(path, \'rb\') as f:\n        return pickle.load(f)\n' in text
    assert "    table = _table(data, model)\n    table = table * 2\n    return {" in text
    assert "@" not in text.replace("@functools", "")
    assert "    table = _table(data, model)\n    return {" in score_py("model.bin", "mine", "return None")
