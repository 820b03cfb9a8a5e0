"""The README's library example is compiled and run, so the documented API stays true."""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "build" / "tiny-qwen2.bin"


def library_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The library in twenty lines", 1)[1]
    return re.search(r"```cpp\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_matches_the_cli(tmp_path):
    src = tmp_path / "example.cpp"
    src.write_text(library_example(), encoding="utf-8")
    exe = tmp_path / "example"
    subprocess.run(["g++", "-O2", "-std=c++17", "-pthread", f"-I{ROOT}", str(src), "-o", str(exe)],
                   check=True, timeout=300)
    ours = subprocess.run([str(exe), str(MODEL), "你好"], capture_output=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    # The tiny model's generation config does not sample, so both are greedy and must agree byte for byte.
    cli = subprocess.run([str(ROOT / "qwen"), "-m", str(MODEL), "-p", "你好", "-n", "64", "--cpu"],
                         capture_output=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert len(ours.stdout) > 1
    assert ours.stdout == cli.stdout
