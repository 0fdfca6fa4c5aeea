"""Built-in texts for validation: tokenizer probes and inputs of different lengths.

Written for the project (no data set is downloaded). The evaluation and calibration texts of
the quality gate are separate files; these only check that an export computes the same function.
"""

TOKENIZER_PROBES = (
    "Hello world",
    "  two  leading spaces and\ttabs\nand a newline",
    "Digits 12345 and 3.14159, dates 2026-11-23, ids a1b2c3",
    "naïve café, Ünïcödé, 日本語のテキスト, emoji 🙂🚀",
    "def add(a, b):\n    return a + b  # code\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "URLs like https://example.org/a?b=c&d=e and e-mail x@y.z",
)

LOGIT_INPUTS = (
    "The capital of France is",
    "Edge devices run small language models close to where the data is produced, so that "
    "answers arrive without a round trip to a data centre.",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nExplain in "
    "two sentences why a smaller model can be faster on the same hardware, and what it costs "
    "in quality.<|im_end|>\n<|im_start|>assistant\nA smaller model reads fewer bytes of "
    "weights for every token it produces, and on most devices",
)

AGREEMENT_TEXT = (
    "Before a model is shipped to a device, three questions decide whether it will be useful "
    "there. Does it fit in the memory the device can spare, together with the cache it needs "
    "for a conversation of the expected length? Does it answer quickly enough that a person "
    "waiting for it does not give up, both for the first word and for every word after that? "
    "And does it still answer well after it has been made smaller, whether by keeping fewer "
    "bits for each weight or by training a smaller student to imitate it? Each question has a "
    "number attached to it, and each number can be measured on the device itself. Memory is "
    "the peak resident size of the process that runs the model. Latency is the time from the "
    "end of the prompt to the first new token, and then the number of tokens produced per "
    "second. Quality is harder: one useful measure is how often the compressed model picks "
    "the same next word as the original, and how surprised it is by ordinary text compared "
    "with the original. A careful engineer writes all of these numbers down, next to the "
    "hardware that produced them, so that the next person can check them again."
)

ENCODER_SENTENCES = (
    "A man is playing a guitar on a stage.",
    "The new phone has a larger battery and a brighter screen.",
    "How do I reset my password?",
    "Edge inference keeps data on the device.",
    "Der Zug nach Berlin fährt um acht Uhr ab.",
)
