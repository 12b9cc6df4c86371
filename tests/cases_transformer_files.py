"""Scenario files beyond chains: a good GPT-style file, and broken ones — each case is (file text, field
named, words expected in the message)."""
from pytest_cases import case

GPT_FILE = '''
name = "tiny-gpt"
seed = 3

[[layers]]
type = "embedding"
num_embeddings = 5
embedding_dim = 4

[[layers]]
type = "positional_embedding"
num_embeddings = 6
embedding_dim = 4

[[layers]]
type = "residual"
  [[layers.layers]]
  type = "layer_norm"
  [[layers.layers]]
  type = "multihead_attention"
  embed_dim = 4
  num_heads = 2
  causal = true
  key_padding_mask = [[false, false, true], [false, true, false]]

[[layers]]
type = "residual"
  [[layers.layers]]
  type = "layer_norm"
  [[layers.layers]]
  type = "linear"
  out = 8
  init = "xavier_uniform"
  bias = true
  [[layers.layers]]
  type = "gelu"
  [[layers.layers]]
  type = "linear"
  tied_to = "layers.3.layers.1.weight"
  bias = "zeros"

[[layers]]
type = "layer_norm"

[[layers]]
type = "linear"
tied_to = "layers.0.weight"

[loss]
type = "softmax_cross_entropy"
reduction = "mean"

[data]
x = [[0, 3, 4], [1, 2, 2]]
y = {generate = "one_hot", shape = [2, 3, 5]}
'''


def _edit(old, new):
    assert old in GPT_FILE, old
    return GPT_FILE.replace(old, new, 1)


@case(id="embed_dim_not_the_input_width")
def case_embed_dim():
    return _edit("embed_dim = 4", "embed_dim = 6"), "layers[2].layers[1].embed_dim", "expected the input's features, 4"


@case(id="num_heads_not_a_divisor")
def case_num_heads():
    return _edit("num_heads = 2", "num_heads = 3"), "layers[2].layers[1].num_heads", "divisor of embed_dim (4)"


@case(id="attention_on_rows")
def case_attention_on_rows():
    text = _edit('''  [[layers.layers]]
  type = "multihead_attention"''', '''  [[layers.layers]]
  type = "flatten"
  [[layers.layers]]
  type = "multihead_attention"''')
    return text, "layers[2].layers[2].type", "takes sequences (N, T, E)"


@case(id="in_proj_weight_shape")
def case_in_proj_weight_shape():
    return (_edit("num_heads = 2\n", "num_heads = 2\n  in_proj_weight = [[1.0, 0.0, 0.0, 0.0]]\n"),
            "layers[2].layers[1].in_proj_weight", "expected shape (12, 4)")


@case(id="out_proj_dotted_unknown_key")
def case_out_proj_dotted():
    return (_edit("num_heads = 2\n", "num_heads = 2\n  out_proj.wieght = [[1.0]]\n"),
            "layers[2].layers[1].out_proj.wieght", "unknown field")


@case(id="bias_with_bias_false")
def case_bias_switched_off():
    return (_edit("num_heads = 2\n", "num_heads = 2\n  bias = false\n  in_proj_bias = [0.0]\n"),
            "layers[2].layers[1].in_proj_bias", "only allowed with bias = true")


@case(id="key_padding_mask_not_boolean")
def case_mask_not_boolean():
    return (_edit("[[false, false, true], [false, true, false]]", "[[0, 0, 1], [0, 1, 0]]"),
            "layers[2].layers[1].key_padding_mask[0][0]", "expected true (the key is ignored) or false")


@case(id="key_padding_mask_wrong_rows")
def case_mask_rows():
    return (_edit("[[false, false, true], [false, true, false]]", "[[false, false, true]]"),
            "layers[2].layers[1].key_padding_mask", "expected 2 rows")


@case(id="key_padding_mask_first_key_with_causal")
def case_mask_first_key():
    return (_edit("[[false, false, true], [false, true, false]]", "[[false, false, true], [true, false, false]]"),
            "layers[2].layers[1].key_padding_mask[1][0]", "the first query sees the first key alone")


@case(id="key_padding_mask_every_key")
def case_mask_every_key():
    text = _edit("causal = true", "causal = false")
    text = text.replace("[[false, false, true], [false, true, false]]", "[[false, false, true], [true, true, true]]")
    return text, "layers[2].layers[1].key_padding_mask[1]", "masks every key of this sample"


@case(id="residual_without_layers")
def case_residual_empty():
    text = GPT_FILE.replace('''[[layers]]
type = "residual"
  [[layers.layers]]
  type = "layer_norm"
  [[layers.layers]]
  type = "multihead_attention"''', '''[[layers]]
type = "residual"

[[layers]]
type = "multihead_attention"''', 1)
    return text, "layers[2].layers", "expected the block's layers as [[layers.layers]]"


@case(id="residual_branch_changes_the_shape")
def case_residual_shape():
    return (_edit('''  type = "linear"
  tied_to = "layers.3.layers.1.weight"
  bias = "zeros"''', '''  type = "linear"
  init = "xavier_uniform"
  out = 3'''), "layers[3]", "x + f(x) needs f(x) of the input's shape")


@case(id="dropout_inside_a_block")
def case_dropout_in_block():
    return (_edit('''  [[layers.layers]]
  type = "gelu"''', '''  [[layers.layers]]
  type = "dropout"'''), "layers[3].layers[2].type", "dropout inside a residual block")


@case(id="tied_to_unknown")
def case_tied_unknown():
    return _edit('tied_to = "layers.0.weight"', 'tied_to = "layers.9.weight"'), "layers[5].tied_to", \
        "not a parameter of an earlier layer"


@case(id="tied_to_a_later_layer")
def case_tied_later():
    return (_edit('tied_to = "layers.3.layers.1.weight"', 'tied_to = "layers.5.weight"'),
            "layers[3].layers[3].tied_to", "not a parameter of an earlier layer")


@case(id="tied_to_wrong_shape")
def case_tied_shape():
    return (_edit('tied_to = "layers.0.weight"', 'tied_to = "layers.3.layers.1.bias"'), "layers[5].tied_to",
            "expected a matrix")


@case(id="tied_to_with_a_weight")
def case_tied_with_weight():
    return (_edit('tied_to = "layers.0.weight"', 'tied_to = "layers.0.weight"\nweight = [[1.0, 0.0, 0.0, 0.0]]'),
            "layers[5].weight", "not allowed with tied_to")


@case(id="tied_to_on_an_activation")
def case_tied_on_activation():
    return _edit('type = "gelu"', 'type = "gelu"\n  tied_to = "layers.0.weight"'), "layers[3].layers[2].tied_to", \
        "gelu has no weight to tie"


@case(id="positional_embedding_too_short")
def case_positional_short():
    return _edit("num_embeddings = 6", "num_embeddings = 2"), "layers[1].num_embeddings", \
        "at least the input's 3 time steps"


@case(id="expect_at_a_missing_inner_layer")
def case_expect_missing_inner():
    return (GPT_FILE + '\n[[expect]]\nat = "layers.2.layers.7.output[0,0,0]"\nprinted = "1"\n', "expect[0].at",
            "expected a layer index from 0 to 1 in layers.2.layers")


@case(id="expect_step_of_a_tied_use")
def case_expect_tied_step():
    text = GPT_FILE + '''
[optimizer]
type = "sgd"
learning_rate = 0.1
steps = 2

[[expect]]
at = "step1.layers.5.weight[0,0]"
printed = "1"
'''
    return text, "expect[0].at", "tied to layers.0.weight: its updates are recorded there"


@case(id="mini_batches_with_a_key_padding_mask")
def case_mask_batches():
    return (GPT_FILE + '\n[optimizer]\ntype = "sgd"\nlearning_rate = 0.1\nbatch_size = 1\n',
            "optimizer.batch_size", "a key_padding_mask belongs to the samples")


@case(id="blocks_nested_too_deep")
def case_blocks_too_deep():
    depth = 18
    text = GPT_FILE.replace('[loss]', "".join(f"[[{'.'.join(['layers'] * (k + 1))}]]\ntype = \"residual\"\n"
                                              for k in range(depth)) + "\n[loss]", 1)
    field = "layers[6]" + ".layers[0]" * 16 + ".layers"
    return text, field, "nested 17 deep; expected at most 16"
