/* The per-frame gate arithmetic of the fused GRU layer (i2md_lib/models/fused_gru.py), one pass
 * over memory instead of a handful of PyTorch operations, forward and backward, and the loops
 * over a layer's frames that call it with the recurrent products between frames (taken from the
 * BLAS inside PyTorch, whose address the caller passes). Compiled on first use by
 * i2md_lib/models/cpu_kernels.py with the machine's C compiler; without one, the layer runs the
 * same arithmetic as PyTorch operations. The GRU's equations, gate order r, z, n as nn.GRU:
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)     z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n = tanh(W_in x + b_in + r (W_hn h + b_hn))     h' = (1 - z) n + z h
 * with tanh(a) computed as 2 sigmoid(2a) - 1 (the factor 2 is in the rows of n of the input
 * products; see fused_gru.py).
 *
 * Layouts (C cells, N clips, H hidden units; every innermost index j is contiguous):
 *   gate  (C, N, 3H) contiguous: in [W_hr h, W_hz h, W_hn h], out [r, z, W_hn h + b_hn]
 *   gi    element (c, i, k) at gi[i * gi_row + c * 3H + k]: [W_ir x, W_iz x, 2 W_in x] of this
 *         frame, and b_i (C, 3H) the biases that complete them: [b_ir + b_hr, b_iz + b_hz, 2 b_in]
 *   state element (c, i, j) at state[i * state_row + c * H + j] (prev and out alike)
 *   cand  (C, N, H) contiguous: the candidate state n = tanh(W_in x + b_in + r (W_hn h + b_hn))
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp for floats in a form the compiler vectorises: exp(x) = 2^k exp(f), f = x - k ln 2,
 * |f| <= ln(2)/2, with the Cephes polynomial for exp(f) (relative error about 1e-7). k is
 * rounded by adding and subtracting 1.5 * 2^23 (floorf would not vectorise without
 * -fno-trapping-math), and 2^k is built from its exponent bits. */
static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float f = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double exp_f64(double x) { return exp(x); }

#define DEFINE_KERNELS(T, SUFFIX, EXP)                                                            \
static inline T sigmoid_##SUFFIX(T x) { return (T)1 / ((T)1 + EXP(-x)); }                         \
                                                                                                  \
/* One frame forward. prev == NULL: the state before the first frame, zero (gate is not read).   \
 * The new state goes to out and, contiguous (C, N, H), to packed (the next frame's product). */  \
void gru_forward_frame_##SUFFIX(int64_t cells, int64_t n, int64_t h,                              \
                                T *restrict gate, const T *restrict gi, int64_t gi_row,           \
                                const T *restrict b_i, const T *restrict b_hn,                    \
                                const T *restrict prev,                                           \
                                T *restrict out, int64_t state_row, T *restrict cand,             \
                                T *restrict packed) {                                             \
    for (int64_t c = 0; c < cells; ++c) {                                                         \
        const T *bias = b_hn + c * h, *bi = b_i + c * 3 * h;                                      \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            T *g = gate + (c * n + i) * 3 * h;                                                    \
            const T *x = gi + i * gi_row + c * 3 * h;                                             \
            const T *hp = prev ? prev + i * state_row + c * h : NULL;                             \
            T *ho = out + i * state_row + c * h;                                                  \
            T *nn = cand + (c * n + i) * h;                                                       \
            T *hc = packed + (c * n + i) * h;                                                     \
            if (hp) {                                                                             \
                for (int64_t j = 0; j < h; ++j) {                                                 \
                    T r = sigmoid_##SUFFIX(g[j] + (x[j] + bi[j]));                                \
                    T z = sigmoid_##SUFFIX(g[h + j] + (x[h + j] + bi[h + j]));                    \
                    T ghn = g[2 * h + j] + bias[j];                                               \
                    T cn = (T)2 * sigmoid_##SUFFIX((x[2 * h + j] + bi[2 * h + j])                 \
                                                   + (T)2 * r * ghn) - (T)1;                      \
                    g[j] = r; g[h + j] = z; g[2 * h + j] = ghn;                                   \
                    nn[j] = cn;                                                                   \
                    ho[j] = hc[j] = cn + z * (hp[j] - cn);                                        \
                }                                                                                 \
            } else {                                                                              \
                for (int64_t j = 0; j < h; ++j) {                                                 \
                    T r = sigmoid_##SUFFIX(x[j] + bi[j]);                                         \
                    T z = sigmoid_##SUFFIX(x[h + j] + bi[h + j]);                                 \
                    T ghn = bias[j];                                                              \
                    T cn = (T)2 * sigmoid_##SUFFIX((x[2 * h + j] + bi[2 * h + j])                 \
                                                   + (T)2 * r * ghn) - (T)1;                      \
                    g[j] = r; g[h + j] = z; g[2 * h + j] = ghn;                                   \
                    nn[j] = cn;                                                                   \
                    ho[j] = hc[j] = ((T)1 - z) * cn;                                              \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* One frame backward. d_h (C, N, H) contiguous: the state's gradient carried from the next      \
 * frame; d_frame (same layout as the states, or NULL): the gradient reaching this frame's state  \
 * from above. Writes d_gh (element (c, i, k) at d_gh[i * gh_row + c * 3H + k]): the gradient of   \
 * [W_hr h + b_hr, W_hz h + b_hz, W_hn h + b_hn], which is also that of the r and z input          \
 * pre-activations; d_in_n (C, N, H): the gradient of W_in x + b_in; d_prev (C, N, H) or NULL:     \
 * z * (the state's full gradient), to which the caller adds d_gh W_h. */                        \
void gru_backward_frame_##SUFFIX(int64_t cells, int64_t n, int64_t h,                             \
                                 const T *restrict d_h, const T *restrict d_frame,                \
                                 const T *restrict gate, const T *restrict cand,                  \
                                 const T *restrict prev, int64_t state_row,                       \
                                 T *restrict d_gh, int64_t gh_row, T *restrict d_in_n,            \
                                 T *restrict d_prev) {                                            \
    for (int64_t c = 0; c < cells; ++c) {                                                         \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            const T *dh = d_h + (c * n + i) * h;                                                  \
            const T *df = d_frame ? d_frame + i * state_row + c * h : NULL;                       \
            const T *g = gate + (c * n + i) * 3 * h;                                              \
            const T *nn = cand + (c * n + i) * h;                                                 \
            const T *hp = prev ? prev + i * state_row + c * h : NULL;                             \
            T *dg = d_gh + i * gh_row + c * 3 * h;                                                \
            T *dx = d_in_n + (c * n + i) * h;                                                     \
            T *dp = d_prev ? d_prev + (c * n + i) * h : NULL;                                     \
            for (int64_t j = 0; j < h; ++j) {                                                     \
                T d = dh[j] + (df ? df[j] : (T)0);                                                \
                T r = g[j], z = g[h + j], ghn = g[2 * h + j], cn = nn[j];                         \
                T hprev = hp ? hp[j] : (T)0;                                                      \
                T dn = d * ((T)1 - z) * ((T)1 - cn * cn);                                         \
                dg[j] = dn * ghn * r * ((T)1 - r);                                                \
                dg[h + j] = d * (hprev - cn) * z * ((T)1 - z);                                    \
                dg[2 * h + j] = dn * r;                                                           \
                dx[j] = dn;                                                                       \
                if (dp) dp[j] = d * z;                                                            \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

/* The BLAS matrix product (Fortran interface, column-major), found in the process by the caller:
 * PyTorch's own (MKL's sgemm_ / dgemm_ in libtorch_cpu). Dimensions are passed through 64-bit
 * integers whose high half is zero, so that a 32-bit (LP64) and a 64-bit (ILP64) BLAS both read
 * them right on a little-endian machine; the two trailing lengths are those of the two one-letter
 * strings, which some Fortran conventions pass and the others ignore. */
#define DEFINE_LAYER_LOOPS(T, SUFFIX)                                                             \
typedef void (*gemm_##SUFFIX##_t)(const char *, const char *, const int64_t *, const int64_t *,   \
                                  const int64_t *, const T *, const T *, const int64_t *,         \
                                  const T *, const int64_t *, const T *, T *, const int64_t *,    \
                                  size_t, size_t);                                                \
                                                                                                  \
/* C = op(A) B + beta C in column-major terms, with op(A) = A^T if transpose_a. */                \
static void gemm_call_##SUFFIX(void *gemm, int transpose_a, int64_t m, int64_t n, int64_t k,      \
                               const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c,    \
                               int64_t ldc) {                                                     \
    const T one = (T)1;                                                                           \
    ((gemm_##SUFFIX##_t)gemm)(transpose_a ? "T" : "N", "N", &m, &n, &k, &one, a, &lda, b, &ldb,   \
                              &beta, c, &ldc, 1, 1);                                              \
}                                                                                                 \
                                                                                                  \
/* A whole layer forward: frame after frame the recurrent products (one per cell, from the        \
 * packed copy of the last state) and the frame kernel. gate_step, cand_step: elements from one    \
 * frame's gates and candidates to the next (0: one buffer for every frame). w_hh (C, 3H, H). */   \
void gru_forward_layer_##SUFFIX(void *gemm, int64_t cells, int64_t n, int64_t h, int64_t frames,  \
                                T *gate, int64_t gate_step, const T *gi, int64_t gi_row,          \
                                const T *b_i, const T *b_hn, const T *w_hh, T *out,               \
                                int64_t state_row, T *cand, int64_t cand_step, T *packed) {       \
    for (int64_t t = 0; t < frames; ++t) {                                                        \
        T *g = gate + t * gate_step, *now = packed + (t % 2) * cells * n * h;                     \
        const T *before = packed + ((t + 1) % 2) * cells * n * h;                                 \
        if (t)                                                                                    \
            for (int64_t c = 0; c < cells; ++c)   /* gate_c (N, 3H) = state_c (N, H) W_c^T */     \
                gemm_call_##SUFFIX(gemm, 1, 3 * h, n, h, w_hh + c * 3 * h * h, h,                 \
                                   before + c * n * h, h, (T)0, g + c * n * 3 * h, 3 * h);        \
        gru_forward_frame_##SUFFIX(cells, n, h, g, gi + t * n * gi_row, gi_row, b_i, b_hn,        \
                                   t ? out + (t - 1) * n * state_row : NULL,                      \
                                   out + t * n * state_row, state_row, cand + t * cand_step, now);\
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* A whole layer backward: frame after frame, last first, the frame kernel and the products that  \
 * carry the state's gradient to the frame before. carried (2, C, N, H): entry 0 holds the        \
 * gradient reaching the last state from after it (zero, or the output's gradient). */            \
void gru_backward_layer_##SUFFIX(void *gemm, int64_t cells, int64_t n, int64_t h, int64_t frames, \
                                 T *carried, const T *d_frames, const T *gates, const T *cands,   \
                                 const T *out, int64_t state_row, T *d_gh, int64_t gh_row,        \
                                 T *d_in_n, const T *w_hh) {                                      \
    int64_t frame = cells * n * h;                                                                \
    for (int64_t t = frames - 1; t >= 0; --t) {                                                   \
        T *now = carried + ((frames - 1 - t) % 2) * frame, *before = carried + ((frames - t) % 2) * frame; \
        T *dg = d_gh + t * n * gh_row;                                                            \
        gru_backward_frame_##SUFFIX(cells, n, h, now, d_frames ? d_frames + t * n * state_row : NULL, \
                                    gates + t * 3 * frame, cands + t * frame,                     \
                                    t ? out + (t - 1) * n * state_row : NULL, state_row, dg,      \
                                    gh_row, d_in_n + t * frame, t ? before : NULL);               \
        if (t)                                                                                    \
            for (int64_t c = 0; c < cells; ++c)   /* before_c (N, H) += d_gh_c (N, 3H) W_c */     \
                gemm_call_##SUFFIX(gemm, 0, h, n, 3 * h, w_hh + c * 3 * h * h, h, dg + c * 3 * h, \
                                   gh_row, (T)1, before + c * n * h, h);                          \
    }                                                                                             \
}

DEFINE_KERNELS(float, f32, exp_f32)
DEFINE_KERNELS(double, f64, exp_f64)
DEFINE_LAYER_LOOPS(float, f32)
DEFINE_LAYER_LOOPS(double, f64)
