/* One decoding step of textgen's transformer in C: the arithmetic of cpu_step.py's NumPy
 * step in one call (textgen/model/native.py builds this file with the machine's C
 * compiler on first use and calls it through ctypes).
 *
 * New tokens in, each at its place in a row of the cache, attending to that row's
 * positions up to its own only: every token is computed alone, in the same order,
 * whatever the other rows hold and however many tokens come in one call, so a row of a
 * server's batch gets bitwise what a sequence decoded on its own gets, and a prompt read
 * at once what it gets a token at a time.
 *
 * Matrices are laid out for steps (x @ W with W's rows contiguous, (in, out)); the cache
 * is (layers, rows, heads, window, head size), shared with the PyTorch model's.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n_layer, n_embd, n_head, hidden, vocab, window, rows; /* rows: the cache's */
    int64_t rms, relu2, qk_norm;  /* RMSNorm (else LayerNorm), relu^2 (else GELU), qk-norm */
    float softcap, eps, qk_eps;   /* softcap 0: none */
    const float *embed;           /* token t's vector: embed[t * embed_row + i * embed_col] */
    int64_t embed_row, embed_col;
    const float *pos_embed;       /* (window, C), or NULL with rotary positions */
    const float *cos, *sin;       /* (window, D/2), or NULL with learned positions */
    const float *const *norm_attn, *const *qkv, *const *proj;  /* per layer */
    const float *const *norm_mlp, *const *up, *const *down;
    const float *norm_out, *unembed; /* (C,), (C, V) */
    float *keys, *values;            /* (L, B, H, W, D) */
} Model;

/* out (B, N) = x (B, K) @ w (K, N). Each output is the same sum, x[b][0] w[0][j] first,
 * whatever B: one row streams w's rows once (the step is bound by reading the weights);
 * several rows take w in blocks of columns that stay in the cache while every row's sums
 * are built in registers. */
#define BLOCK 64
static void times(const float *x, const float *w, float *out, int64_t B, int64_t K, int64_t N) {
    if (B == 1) {
        memset(out, 0, sizeof(float) * N);
        for (int64_t i = 0; i < K; i++) {
            const float xi = x[i], *row = w + i * N;
#pragma omp simd
            for (int64_t j = 0; j < N; j++) out[j] += xi * row[j];
        }
        return;
    }
    for (int64_t j0 = 0; j0 < N; j0 += BLOCK) {
        const int64_t width = N - j0 < BLOCK ? N - j0 : BLOCK;
        for (int64_t b = 0; b < B; b++) {
            float sums[BLOCK] = {0};
            const float *xb = x + b * K;
            if (width == BLOCK) {
                for (int64_t i = 0; i < K; i++) {
                    const float xi = xb[i], *row = w + i * N + j0;
#pragma omp simd
                    for (int64_t j = 0; j < BLOCK; j++) sums[j] += xi * row[j];
                }
            } else {
                for (int64_t i = 0; i < K; i++) {
                    const float xi = xb[i], *row = w + i * N + j0;
#pragma omp simd
                    for (int64_t j = 0; j < width; j++) sums[j] += xi * row[j];
                }
            }
            memcpy(out + b * N + j0, sums, sizeof(float) * width);
        }
    }
}

static void norm(const float *x, const float *gain, float *out, int64_t B, int64_t C, int rms,
                 float eps) {
    for (int64_t b = 0; b < B; b++) {
        const float *v = x + b * C;
        float mean = 0.0f, square = 0.0f;
        if (!rms) {
#pragma omp simd reduction(+ : mean)
            for (int64_t i = 0; i < C; i++) mean += v[i];
            mean /= (float)C;
        }
#pragma omp simd reduction(+ : square)
        for (int64_t i = 0; i < C; i++) square += (v[i] - mean) * (v[i] - mean);
        const float scale = 1.0f / sqrtf(square / (float)C + eps);
        for (int64_t i = 0; i < C; i++) out[b * C + i] = (v[i] - mean) * scale * gain[i];
    }
}

static void unit_rms(float *v, int64_t D, float eps) {
    float square = 0.0f;
#pragma omp simd reduction(+ : square)
    for (int64_t d = 0; d < D; d++) square += v[d] * v[d];
    const float scale = 1.0f / sqrtf(square / (float)D + eps);
    for (int64_t d = 0; d < D; d++) v[d] *= scale;
}

static void rotate(float *v, const float *cos, const float *sin, int64_t half) {
    for (int64_t f = 0; f < half; f++) {
        const float a = v[2 * f], b = v[2 * f + 1];
        v[2 * f] = a * cos[f] - b * sin[f];
        v[2 * f + 1] = a * sin[f] + b * cos[f];
    }
}

/* n new tokens ("items"), item i being token ids[i] at position at[i] of cache row
 * rows[i]: it attends to positions 0 .. at[i] of that row. The items of one row come in
 * order of position (a prompt: several; a decoding step: one per row), and each item's
 * keys and values are written before the next item attends, so a prompt read at once
 * gets bitwise what it gets a token at a time. Logits (one row of V each) are written for
 * the last item of each run of items of one row. 0 on success, 1 when memory ran out, 2
 * for an item out of bounds (a token id past the vocabulary, a position past the window,
 * a row past the cache's), before anything is read or written. */
int textgen_step(const Model *m, int64_t n, const int64_t *rows, const int64_t *at,
                 const int64_t *ids, float *logits) {
    const int64_t C = m->n_embd, H = m->n_head, D = C / H, W = m->window;
    const int64_t M = m->hidden, V = m->vocab, half = D / 2;
    const float scale = 1.0f / sqrtf((float)D);
    for (int64_t b = 0; b < n; b++)
        if (ids[b] < 0 || ids[b] >= V || at[b] < 0 || at[b] >= W || rows[b] < 0 || rows[b] >= m->rows)
            return 2;
    float *work = malloc(sizeof(float) * (n * (7 * C + M) + W));
    if (!work) return 1;
    float *x = work, *normed = x + n * C, *qkv = normed + n * C, *attended = qkv + 3 * n * C;
    float *added = attended + n * C, *hidden = added + n * C, *scores = hidden + n * M;
    for (int64_t b = 0; b < n; b++) {
        for (int64_t i = 0; i < C; i++) {
            x[b * C + i] = m->embed[ids[b] * m->embed_row + i * m->embed_col];
            if (m->pos_embed) x[b * C + i] += m->pos_embed[at[b] * C + i];
        }
    }
    for (int64_t layer = 0; layer < m->n_layer; layer++) {
        norm(x, m->norm_attn[layer], normed, n, C, m->rms, m->eps);
        times(normed, m->qkv[layer], qkv, n, C, 3 * C);
        for (int64_t b = 0; b < n; b++) {
            const int64_t now = at[b];
            for (int64_t h = 0; h < H; h++) {
                float *q = qkv + b * 3 * C + h * D, *k = q + C, *v = q + 2 * C;
                if (m->qk_norm) {
                    unit_rms(q, D, m->qk_eps);
                    unit_rms(k, D, m->qk_eps);
                }
                if (m->cos) {
                    rotate(q, m->cos + now * half, m->sin + now * half, half);
                    rotate(k, m->cos + now * half, m->sin + now * half, half);
                }
                const int64_t head = (((layer * m->rows) + rows[b]) * H + h) * W * D;
                float *keys = m->keys + head, *values = m->values + head;
                memcpy(keys + now * D, k, sizeof(float) * D);
                memcpy(values + now * D, v, sizeof(float) * D);
                float top = -INFINITY;
                for (int64_t t = 0; t <= now; t++) { /* the row's own positions only */
                    float score = 0.0f;
#pragma omp simd reduction(+ : score)
                    for (int64_t d = 0; d < D; d++) score += q[d] * keys[t * D + d];
                    scores[t] = score * scale;
                    top = scores[t] > top ? scores[t] : top;
                }
                float total = 0.0f;
                for (int64_t t = 0; t <= now; t++) {
                    scores[t] = expf(scores[t] - top);
                    total += scores[t];
                }
                float *out = attended + b * C + h * D;
                memset(out, 0, sizeof(float) * D);
                for (int64_t t = 0; t <= now; t++) {
                    const float weight = scores[t] / total;
#pragma omp simd
                    for (int64_t d = 0; d < D; d++) out[d] += weight * values[t * D + d];
                }
            }
        }
        times(attended, m->proj[layer], added, n, C, C);
        for (int64_t i = 0; i < n * C; i++) x[i] += added[i];
        norm(x, m->norm_mlp[layer], normed, n, C, m->rms, m->eps);
        times(normed, m->up[layer], hidden, n, C, M);
        for (int64_t i = 0; i < n * M; i++) {
            const float u = hidden[i];
            hidden[i] = m->relu2 ? (u > 0.0f ? u * u : 0.0f)
                                 : 0.5f * u * (1.0f + tanhf(0.7978845608f * (u + 0.044715f * u * u * u)));
        }
        times(hidden, m->down[layer], added, n, M, C);
        for (int64_t i = 0; i < n * C; i++) x[i] += added[i];
    }
    int64_t last = 0; /* the items that end a run of one row, to the front of x */
    for (int64_t b = 0; b < n; b++)
        if (b == n - 1 || rows[b + 1] != rows[b]) memmove(x + last++ * C, x + b * C, sizeof(float) * C);
    norm(x, m->norm_out, normed, last, C, m->rms, m->eps);
    times(normed, m->unembed, logits, last, C, V);
    if (m->softcap > 0.0f)
        for (int64_t i = 0; i < last * V; i++) logits[i] = m->softcap * tanhf(logits[i] / m->softcap);
    free(work);
    return 0;
}
