import pytest

from cold_start_data.config import PAPER_VIDEO_SHARE, BuildConfig
from cold_start_data.mixer import allocate, bucket_counts, bucket_shares, plan


def test_allocate_by_hand():
    assert allocate(10, {"a": 0.485, "b": 0.338, "c": 0.029, "d": 0.147}) == {"a": 5, "b": 3, "c": 0, "d": 2}
    assert allocate(3, {"a": 1, "b": 1, "c": 1}) == {"a": 1, "b": 1, "c": 1}
    assert allocate(0, {"a": 1}) == {"a": 0}


def test_paper_shares():
    shares = bucket_shares(BuildConfig(size=1))
    assert PAPER_VIDEO_SHARE == pytest.approx(104 / 784)
    assert shares["no_think"] / (1 - shares["video"]) == pytest.approx(0.485, abs=5e-4)
    assert shares["think"] / (1 - shares["video"]) == pytest.approx(0.338, abs=5e-4)
    assert shares["auto_think"] / (1 - shares["video"]) == pytest.approx(0.029, abs=5e-4)
    assert shares["agentic"] / (1 - shares["video"]) == pytest.approx(0.147, abs=5e-4)
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("size", [1, 7, 40, 333, 1000, 12345])
def test_counts_are_exact_and_within_one_sample_of_the_target(size):
    config = BuildConfig(size=size)
    counts = bucket_counts(config)
    assert sum(counts.values()) == size
    for bucket, share in bucket_shares(config).items():
        assert abs(counts[bucket] - size * share) < 1
    slots = plan(config)
    assert sum(s.count for s in slots) == size
    video = sum(s.count for s in slots if s.bucket == "video")
    think_video = sum(s.count for s in slots if s.bucket == "video" and s.mode == "think")
    assert abs(think_video - video * 24 / 104) < 1


def test_user_rows_take_the_place_of_synthetic_ones():
    config = BuildConfig(size=100)
    counts = bucket_counts(config)
    slots = plan(config, taken={"think": 5})
    assert sum(s.count for s in slots if s.bucket == "think") == counts["think"] - 5


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown mode 'thinking'"):
        BuildConfig(size=10, proportions={"thinking": 1.0})
    with pytest.raises(ValueError, match="no code plan"):
        BuildConfig(size=10, sources={"agentic": {"counting": 1.0}})
    with pytest.raises(ValueError, match="video source"):
        BuildConfig(size=10, sources={"think": {"video_order": 1.0}})
    with pytest.raises(ValueError, match="model_dir"):
        BuildConfig(size=10, teacher={"kind": "model"})
