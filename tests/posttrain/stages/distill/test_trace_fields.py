"""What a distill trace record carries beyond the RL stage's: the teacher, and the gap and text of each token."""

from types import SimpleNamespace

from posttrain.stages.distill import DistillLoop, token_texts


class FakeTokenizer:
    """Decodes id i as "t<i>" and counts the ids it was asked for."""

    def __init__(self):
        self.decoded = []

    def batch_decode(self, sequences):
        self.decoded += [ids[0] for ids in sequences]
        return [f"t{ids[0]}" for ids in sequences]


def test_each_token_is_decoded_alone_and_once_per_run():
    tokenizer, cache = FakeTokenizer(), {}
    assert token_texts(tokenizer, [5, 7, 5], cache) == ["t5", "t7", "t5"]
    assert token_texts(tokenizer, [7, 9], cache) == ["t7", "t9"]
    assert tokenizer.decoded == [5, 7, 9]


def test_a_record_has_one_rounded_gap_and_one_text_per_completion_token():
    loop = SimpleNamespace(routes=["thinker"], teacher=[[-1.0, -0.5, -2.0]], token_text={},
                           encoder=SimpleNamespace(tokenizer=FakeTokenizer()))
    completion = SimpleNamespace(token_ids=[3, 4, 3], logprobs=[-0.2, -0.5004, -2.12345])
    fields = DistillLoop.trace_fields(loop, 0, completion)
    assert fields["teacher"] == "thinker" and abs(fields["teacher_gap"] - (0.8 - 0.0004 - 0.12345) / 3) < 1e-12
    assert fields["teacher_gaps"] == [0.8, -0.0, -0.123] and fields["token_texts"] == ["t3", "t4", "t3"]
