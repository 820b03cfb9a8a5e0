"""The README's library example is compiled and run, so the documented API stays true."""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "build" / "tiny-qwen2.bin"


def library_example(heading="## The library in twenty lines"):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    return re.search(r"```cpp\n(.*?)```", section, re.S).group(1)


def compile_example(tmp_path, heading):
    src = tmp_path / "example.cpp"
    src.write_text(library_example(heading), encoding="utf-8")
    exe = tmp_path / "example"
    subprocess.run(["g++", "-O2", "-std=c++17", "-pthread", f"-I{ROOT}", str(src), "-o", str(exe)],
                   check=True, timeout=300)
    return exe


def test_readme_library_example_matches_the_cli(tmp_path):
    exe = compile_example(tmp_path, "## The library in twenty lines")
    ours = subprocess.run([str(exe), str(MODEL), "你好"], capture_output=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    # The tiny model's generation config does not sample, so both are greedy and must agree byte for byte.
    cli = subprocess.run([str(ROOT / "qwen"), "-m", str(MODEL), "-p", "你好", "-n", "64", "--cpu"],
                         capture_output=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert len(ours.stdout) > 1
    assert ours.stdout == cli.stdout


def test_readme_scheduler_example_answers_as_each_prompt_alone(tmp_path):
    exe = compile_example(tmp_path, "### Many prompts at once")
    prompts = ["你好", "Once upon a time", "Hello, my dog is cute"]
    ours = subprocess.run([str(exe), str(MODEL), *prompts], capture_output=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    answers = dict(line.split(b"\t", 1) for line in ours.stdout.split(b"\n") if line)
    assert sorted(answers) == [b"0", b"1", b"2"]
    for i, prompt in enumerate(prompts):
        cli = subprocess.run([str(ROOT / "qwen"), "-m", str(MODEL), "-p", prompt, "-n", "64", "--cpu"],
                             capture_output=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert answers[str(i).encode()] + b"\n" == cli.stdout
