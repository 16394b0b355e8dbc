#pragma once
// Pruning helpers on row-major f32 [rows, cols] weights, in place. They zero
// weights; storing them sparsely is convert.h's job. Ties are broken by
// position (earlier columns are pruned first), so results are deterministic.
// A non-finite weight is refused (lacuna::Error): it has no magnitude to rank.
#include <cstddef>

namespace lacuna {

enum class PruneScope { per_row, per_tensor };

// Zeroes the round(sparsity * count) smallest |w| of each row (per_row) or of
// the whole matrix (per_tensor). sparsity is in [0, 1].
void prune_magnitude(float* w, size_t rows, size_t cols, double sparsity, PruneScope scope);

// Wanda (Sun et al., "A Simple and Effective Pruning Approach for Large
// Language Models", 2023): zeroes the round(sparsity * cols) weights of each
// row with the smallest |w_ij| * input_norm[j], where input_norm[j] is the L2
// norm of input channel j over calibration tokens (cols values, finite and
// >= 0, else lacuna::Error). Rows compete only within themselves, as in the paper.
void prune_wanda(float* w, size_t rows, size_t cols, const float* input_norm, double sparsity);

// N:M: in every run of m consecutive weights of a row keep the n largest |w|
// (2:4 is the common case). A row's last, shorter run keeps min(n, its length).
void prune_n_m(float* w, size_t rows, size_t cols, size_t n, size_t m);

// Zeroes the round(sparsity * blocks) block_rows x block_cols blocks with the
// smallest L2 norm (edge blocks count only their in-range weights), so the
// result stores well as bsr with the same block shape.
void prune_blocks(float* w, size_t rows, size_t cols, size_t block_rows, size_t block_cols, double sparsity);

}  // namespace lacuna
