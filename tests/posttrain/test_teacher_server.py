"""Teacher servers' logic without Ray: log-probs of the given tokens, and the shared-tokenizer check."""

import torch

from posttrain.teacher_server import TeacherServer, same_tokenizer


def test_logprobs_are_those_of_a_full_forward(tiny_model_dir):
    server = TeacherServer(str(tiny_model_dir))
    prompt, completion = [21, 22, 23], [30, 31]
    [lp] = server.logprobs([(prompt, completion)])
    with torch.no_grad():
        logits = server.model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    expected = [torch.log_softmax(logits[2], -1)[30].item(), torch.log_softmax(logits[3], -1)[31].item()]
    assert torch.allclose(torch.tensor(lp), torch.tensor(expected), atol=1e-5)
    assert server.logprobs([(prompt, [])]) == [[]]


def test_a_batch_of_pairs_of_different_lengths_scores_each_as_alone(tiny_model_dir):
    server = TeacherServer(str(tiny_model_dir))
    pairs = [([21, 22, 23], [30, 31]), ([40], [41, 42, 43, 44, 45]), ([21, 22, 23, 24, 25, 26], [])]
    batched = server.logprobs(pairs)
    for pair, got in zip(pairs, batched):
        [alone] = server.logprobs([pair])
        assert len(got) == len(pair[1]) and torch.allclose(torch.tensor(got), torch.tensor(alone), atol=1e-5)


def test_same_tokenizer(tiny_model_dir, llama_dir):
    assert same_tokenizer(tiny_model_dir, tiny_model_dir) is None
    assert "vocabulary differs" in same_tokenizer(tiny_model_dir, llama_dir)
