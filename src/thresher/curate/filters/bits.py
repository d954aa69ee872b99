"""The bit layouts and n-gram sizes shared by the text statistics (:mod:`.text`) and their numba kernels
(:mod:`.text_kernels`), apart so that neither module imports the other's."""

TOP_NS = (2, 3, 4)  # Gopher's "top n-gram character fraction"
DUP_NS = (5, 6, 7, 8, 9, 10)  # Gopher's "duplicate n-gram character fraction"
# Character class bits (``text.char_tables``).
SPACE, PUNCT, ALPHA, BULLET, TERMINAL, C4_END, SENTENCE_END, CLOSER, UNSPACED_END = (1 << i for i in range(9))
# Line flag bits (``text_kernels.scan_lines``).
L_BULLET, L_TERMINAL, L_C4_END, L_DOTS, L_ELLIPSIS, L_BRACKET, L_CURLY = (1 << i for i in range(7))
