import re
from pathlib import Path

from murmura.config_doc import BEGIN, END, config_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_python_example_runs() -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    history = namespace["history"]
    assert history.rounds[-1].test_accuracy > 0.8  # type: ignore[attr-defined]


def test_readme_config_reference_is_current() -> None:
    text = README.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == config_reference().strip(), "run `make docs`"


def test_readme_task_from_scratch_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "class MyTask" in b)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    task = namespace["MyTask"]()  # type: ignore[operator]
    data = task.federate(4, "iid", {}, 0)
    assert data.num_clients == 4 and sum(data.client_size(c) for c in range(4)) == 800
    x, _ = data.test()
    assert task.build_model()(x).shape == (200, 2)
