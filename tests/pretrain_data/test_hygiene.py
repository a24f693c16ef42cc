"""Near-duplicate removal and decontamination on real image files, with hand-checked similarities."""

import random

import pytest
from PIL import Image

from cold_start_data.sources.shapes import place, render
from pretrain_data.hygiene import Hygiene, candidate_recall, choose_bands, jaccard, row_tokens


def scene_row(tmp_path, name, image, task="caption"):
    path = tmp_path / f"{name}.png"
    image.save(path)
    return {"id": name, "task": task, "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": "shapes"}]}


def scenes(n, seed=0):
    rng = random.Random(seed)
    return [render(place(rng, [("circle", "red"), ("square", "blue"), ("triangle", "green")])) for _ in range(n)]


def recompressed(image):
    """The same picture rescaled, as scraped copies often are. (A JPEG round trip moves some of these synthetic
    scenes' hashes by 2 bits, Jaccard 0.94: past the paper's threshold, so not a duplicate by its rule.)"""
    return image.resize((300, 300), Image.Resampling.BICUBIC)


def test_banding_finds_pairs_at_the_threshold():
    bands, rows = choose_bands(0.95, 128)
    assert bands * rows <= 128
    assert candidate_recall(0.95, bands, rows) >= 0.99
    assert candidate_recall(0.5, bands, rows) < 1e-3  # unrelated images are almost never candidates


def test_one_bit_apart_is_a_duplicate_and_two_bits_is_not():
    a = frozenset(f"0:{i}:0" for i in range(64))
    one = (a - {"0:0:0"}) | {"0:0:1"}
    two = (one - {"0:1:0"}) | {"0:1:1"}
    assert jaccard(a, one) == pytest.approx(63 / 65) and jaccard(a, one) > 0.95
    assert jaccard(a, two) == pytest.approx(62 / 66) and jaccard(a, two) < 0.95


def test_recompressed_copies_are_removed_and_distinct_scenes_kept(tmp_path):
    originals = scenes(12)
    rows = [scene_row(tmp_path, f"s{i}", image) for i, image in enumerate(originals)]
    copies = [scene_row(tmp_path, f"c{i}", recompressed(image)) for i, image in enumerate(originals[:5])]
    hygiene = Hygiene()
    assert all(jaccard(row_tokens(r, hygiene.hash_of), row_tokens(c, hygiene.hash_of)) > 0.95
               for r, c in zip(rows, copies))  # the planted pairs really are near-duplicates
    kept = hygiene.clean(rows + copies, evaluation=[])
    assert [r["id"] for r in kept] == [f"s{i}" for i in range(12)]
    assert hygiene.report.per_task["caption"] == {"drawn": 17, "duplicate": 5, "contaminated": 0, "kept": 12}


def test_the_same_picture_in_another_task_is_another_example(tmp_path):
    image = scenes(1)[0]
    rows = [scene_row(tmp_path, "a", image, "caption"), scene_row(tmp_path, "b", image, "counting")]
    assert len(Hygiene().clean(rows, evaluation=[])) == 2


def test_rows_showing_an_evaluation_image_are_dropped(tmp_path):
    train = [scene_row(tmp_path, f"t{i}", image) for i, image in enumerate(scenes(6, seed=1))]
    held_out = [scene_row(tmp_path, "e0", recompressed(scenes(6, seed=1)[2]), task="counting")]
    hygiene = Hygiene()
    kept = hygiene.clean(train, held_out)
    assert [r["id"] for r in kept] == ["t0", "t1", "t3", "t4", "t5"]
    assert hygiene.report.per_task["caption"]["contaminated"] == 1


def test_planted_mismatches_get_other_rows_captions():
    from pretrain_data.build import plant_mismatches
    from pretrain_data.tasks import draw_examples

    examples = draw_examples("caption", 20, seed=3)
    original = [e.target for e in examples]
    planted = plant_mismatches(examples, 0.25, seed=3)
    assert len(planted) == 5
    for i, e in enumerate(examples):
        assert (e.target != original[i]) == (i in planted) or original.count(original[i]) > 1
        assert e.answer == e.target
    assert sorted(e.target for e in examples) == sorted(original)  # captions moved, none invented


def test_score_filter_drops_low_pairs_and_measures_itself():
    from pretrain_data.score_filter import filter_rows, pair_of

    def row(i, planted=False, images=1):
        content = [{"type": "image", "image": f"/x/{i}-{k}.png"} for k in range(images)] + [{"type": "text", "text": "?"}]
        return {"id": str(i), "task": "caption", "messages": [{"role": "user", "content": content},
                                                              {"role": "assistant", "content": f"caption {i}"}],
                **({"planted": "mismatched_caption"} if planted else {})}

    rows = [row(0), row(1, planted=True), row(2, planted=True), row(3), row(4, images=2)]
    assert pair_of(rows[0]) == ("/x/0-0.png", "caption 0") and pair_of(rows[4]) is None
    scores = {"0": 0.9, "1": 0.01, "2": 0.5, "3": 0.02}  # row 4 unscored: kept
    kept, report = filter_rows(rows, scores, threshold=0.05)
    assert [r["id"] for r in kept] == ["0", "2", "4"]
    assert report["dropped"] == 2 and report["planted_dropped"] == 1
    assert report["recall"] == 0.5 and report["precision"] == 0.5
    with pytest.raises(ValueError, match="every row of task 'caption' scores below the threshold 0.95"):
        filter_rows(rows[:4], scores, threshold=0.95)
