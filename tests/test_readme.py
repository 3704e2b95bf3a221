"""README's quick start and CI stay in step: CI runs exactly README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.startswith("python3 -m venv")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in readme
    assert "pytest" in ci_lines[0]


def _table(readme: str, header: str) -> list[list[str]]:
    """The rows (cells) of the markdown table whose header row starts with `header`."""
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _yaml(value) -> str:
    """A config value as the README writes it: YAML's own spelling, in backticks."""
    from omegaconf import ListConfig, OmegaConf

    if isinstance(value, ListConfig):
        return f"`{list(value)}`"
    return f"`{OmegaConf.to_yaml({'v': value}).split(':', 1)[1].strip()}`"


def _leaves(cfg, prefix: str = "") -> dict:
    from omegaconf import DictConfig

    out = {}
    for key in cfg:
        value = cfg[key]
        if isinstance(value, DictConfig) and key not in ("entropy_coef",):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_readme_options_table_is_the_schema():
    """Every schema key is in the options table (docs/options.md), with the schema's default for A2C and, where it
    differs, for A3C; every key in the table exists."""
    from omegaconf import OmegaConf

    from jaxac.config import A2CConfig, A3CConfig, Config, compose_config

    options = (ROOT / "docs" / "options.md").read_text()
    rows = {cells[0].strip("`"): cells for cells in _table(options, "| option | default | A3C |")}
    schema = {algo: _leaves(OmegaConf.merge(OmegaConf.structured(Config),
                                            {"algo": OmegaConf.structured(node)}))
              for algo, node in (("a2c", A2CConfig), ("a3c", A3CConfig))}
    a2c, a3c = schema["a2c"], schema["a3c"]
    # conf/ adds no defaults of its own: a plain run composes to the schema's values
    assert _leaves(compose_config([])) == a2c
    a2c.pop("algo.name"), a3c.pop("algo.name")
    assert rows.pop("algo")[1] == "`a2c`" and rows.pop("env")[1] == "`cartpole`"
    assert set(rows) == set(a2c) | set(a3c), "README options table and schema keys differ"
    for key, (_, default, a3c_default, _meaning) in rows.items():
        if key in a2c:
            assert default == _yaml(a2c[key]), key
        else:
            assert default == "", key  # an A3C-only key
        if a3c.get(key) != a2c.get(key):
            assert a3c_default == _yaml(a3c[key]), key
        else:
            assert a3c_default == "", key


def test_readme_lists_what_each_tuned_file_changes():
    from omegaconf import OmegaConf

    readme = (ROOT / "README.md").read_text()
    listed = {cells[0].strip("`"): cells[1] for cells in _table(readme, "| file | sets |")}
    tuned = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "conf" / "tuned").glob("*.yaml"))
    assert sorted(listed) == tuned
    for path in tuned:
        values = _leaves(OmegaConf.load(ROOT / path))
        expected = sorted(f"`{k}={OmegaConf.to_yaml({'v': v}).split(':', 1)[1].strip()}`"
                          for k, v in values.items())
        assert sorted(x.strip() for x in listed[path].split(",")) == expected, path
