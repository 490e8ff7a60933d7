"""`inuqueue journal check|repair` and `inuqueue store verify`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Daemon, StandinHandle, run_inuqueue


async def _data_with_tasks(daemon: Daemon, count: int) -> Path:
    for n in range(count):
        await daemon.wait_status(await daemon.enqueue({"seed": n}), "done")
    await daemon.stop()
    return daemon.config.data_dir


async def test_check_reports_a_healthy_directory(
    daemon: Daemon, standin: StandinHandle
) -> None:
    data = await _data_with_tasks(daemon, 2)

    result = run_inuqueue("journal", "check", "--data", str(data))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 records" in result.stdout
    assert "tasks: 2 done" in result.stdout
    assert "2 stored, 2 referenced, 0 missing" in result.stdout


async def test_check_names_the_damage_and_repair_cuts_it_with_a_backup(
    daemon: Daemon, standin: StandinHandle
) -> None:
    data = await _data_with_tasks(daemon, 2)
    journal = data / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = lines[3].replace(b'"ts"', b'"tz"')
    journal.write_bytes(b"".join([*lines[:3], damaged, *lines[4:]]))
    before = journal.read_bytes()

    check = run_inuqueue("journal", "check", "--data", str(data))
    assert check.returncode == 65
    assert "DAMAGED at line 4" in check.stdout
    assert journal.read_bytes() == before

    repair = run_inuqueue("journal", "repair", "--data", str(data))
    assert repair.returncode == 0, repair.stderr
    assert "kept 3 records (up to seq 3)" in repair.stdout
    assert "lost for tasks" in repair.stdout
    assert journal.read_bytes() == b"".join(lines[:3])
    (backup,) = data.glob("journal.jsonl.cut-*")
    assert backup.read_bytes() == b"".join([damaged, *lines[4:]])

    images_before = sorted(p for p in (data / "images").rglob("*") if p.is_file())
    await daemon.start(image_grace_s=0.0)
    assert len(daemon.runtime.queue.state.tasks) == 1  # the second was cut
    # The cut task's image is all that is left of it: nothing collects it.
    await daemon.runtime.collector.sweep()
    assert sorted(p for p in (data / "images").rglob("*") if p.is_file()) == (
        images_before
    )


async def test_repair_refuses_while_a_daemon_runs(daemon: Daemon) -> None:
    result = run_inuqueue("journal", "repair", "--data", str(daemon.config.data_dir))

    assert result.returncode == 69
    assert "is using the data directory" in result.stderr


async def test_verify_sets_aside_an_image_whose_bytes_changed(
    daemon: Daemon, standin: StandinHandle
) -> None:
    data = await _data_with_tasks(daemon, 2)
    assert run_inuqueue("store", "verify", "--data", str(data)).returncode == 0
    images = sorted(p for p in (data / "images").rglob("*") if p.is_file())
    images[0].write_bytes(images[0].read_bytes() + b"!")

    result = run_inuqueue("store", "verify", "--data", str(data))

    assert result.returncode == 65
    assert "2 checked, 1 damaged" in result.stdout
    assert (data / "images" / "damaged" / images[0].name).is_file()
    assert not images[0].exists()
    check = run_inuqueue("journal", "check", "--data", str(data))
    assert "1 missing" in check.stdout


async def test_a_missing_journal_beside_images_is_reported_and_nothing_deleted(
    daemon: Daemon, standin: StandinHandle
) -> None:
    data = await _data_with_tasks(daemon, 1)
    (data / "journal.jsonl").unlink()

    check = run_inuqueue("journal", "check", "--data", str(data))

    assert check.returncode == 65
    assert "NO JOURNAL RECORDS, but 1 images are stored" in check.stdout
    await daemon.start(image_grace_s=0.0)
    await daemon.runtime.collector.sweep()
    assert len([p for p in (data / "images").rglob("*") if p.is_file()]) == 1


def test_a_directory_in_place_of_the_journal_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").mkdir()
    (tmp_path / "images" / "zz").mkdir(parents=True)
    (tmp_path / "images" / "zz" / "stray").write_text("not an image")

    check = run_inuqueue("journal", "check", "--data", str(tmp_path))
    verify = run_inuqueue("store", "verify", "--data", str(tmp_path))

    assert check.returncode == 69
    assert "is a directory, not the journal" in check.stderr
    assert (verify.returncode, verify.stdout.strip()) == (
        0,
        "images: 0 checked, 0 damaged",
    )
