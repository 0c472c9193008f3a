/* A Llama-family decoder step in plain C (fp32, one sequence, one thread).
 *
 * Runs `count` new tokens at cache position `pos` over a FastLM's own tensors: the weights
 * row-major [out, in] (q|k|v and gate|up fused; measured, four rows at a time against x held in
 * registers reads faster than [in, out] axpys), rotary cos/sin in pair layout, and the StaticCache's
 * key/value rows (written in place). One call replaces ~110 torch operations, so the step costs
 * what reading the weights costs. Every weight row is read once per call, however
 * many tokens it carries (prompt-lookup drafts).
 *
 * Built without -ffast-math: reductions use explicit 8-wide partial sums (vectorized without the
 * compiler reassociating anything), the results are IEEE and close to torch's (a different summation
 * order only).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const float *norm1, *qkv, *qkv_bias, *q_norm, *k_norm, *o, *o_bias, *norm2, *gate_up, *down;
} layer_t;

typedef struct {
    int32_t layers, hidden, heads, kv_heads, head_dim, inter, vocab;
    int32_t cache_rows; /* rows per kv head in the cache tensors */
    int32_t stream;     /* prefetch hint: 1 non-temporal, 0 into L2 (see AHEAD) */
    float eps, scale;
    const float *embed, *final_norm, *head, *head_bias, *cos, *sin;
    const layer_t *layer;
} model_t;

/* 8-float vectors (GCC/Clang vector extensions: AVX/AVX2 registers with -march=native, plain scalar
 * code on targets without SIMD); unaligned loads through a may_alias type */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD(p) (*(const v8u *)(p))
/* address arithmetic as integers: the prefetched address may lie past the array (prefetches never fault).
 * Two hints, chosen per model by measuring both (step.py): non-temporal (the weights stream past the
 * caches instead of evicting what the interpreter runs between steps: +13-15% tokens/s on the CPU it was
 * tuned on) or into L2 (on an Intel Xeon with a 105 MB L3, non-temporal reads of weights that fit in L3
 * came from memory every step: 2.5x slower). The branch is loop-invariant: the compiler unswitches it. */
#define AHEAD(p)                                                           \
    do {                                                                   \
        if (stream)                                                        \
            __builtin_prefetch((const void *)((uintptr_t)(p) + ahead), 0, 0); \
        else                                                               \
            __builtin_prefetch((const void *)((uintptr_t)(p) + ahead), 0, 2); \
    } while (0)

static float hsum(v8 a) {
    v8 pairs = {a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]};
    return (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]);
}

static float dot(const float *restrict a, const float *restrict b, int n) {
    v8 acc0 = {0}, acc1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 += LOAD(a + i) * LOAD(b + i);
        acc1 += LOAD(a + i + 8) * LOAD(b + i + 8);
    }
    if (i + 8 <= n) {
        acc0 += LOAD(a + i) * LOAD(b + i);
        i += 8;
    }
    float s = hsum(acc0 + acc1);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Four dot products of consecutive rows w[0..3] (stride n) with x: the rows stream, x stays in registers. */
static void dot4(const float *restrict w, const float *restrict x, int n, float *restrict out, int stream) {
    const float *w0 = w, *w1 = w + n, *w2 = w + 2 * (size_t)n, *w3 = w + 3 * (size_t)n;
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    int i = 0;
    /* prefetch distance: one row, within 2-4 KB (measured best: 2 KB for 768-byte rows, ~3.5 KB for 3.5 KB rows) */
    uintptr_t ahead = n * 4 < 2048 ? 2048 : (n * 4 > 4096 ? 4096 : (uintptr_t)n * 4);
    for (; i + 16 <= n; i += 16) {
        /* non-temporal prefetch ahead of each row: the weights stream past the caches instead of evicting
         * what the interpreter runs between steps (measured in the engine: +13-15% tokens/s) */
        AHEAD(w0 + i);
        AHEAD(w1 + i);
        AHEAD(w2 + i);
        AHEAD(w3 + i);
        v8 xa = LOAD(x + i), xb = LOAD(x + i + 8);
        a0 += xa * LOAD(w0 + i), a1 += xa * LOAD(w1 + i), a2 += xa * LOAD(w2 + i), a3 += xa * LOAD(w3 + i);
        b0 += xb * LOAD(w0 + i + 8), b1 += xb * LOAD(w1 + i + 8), b2 += xb * LOAD(w2 + i + 8);
        b3 += xb * LOAD(w3 + i + 8);
    }
    if (i + 8 <= n) {
        v8 xa = LOAD(x + i);
        a0 += xa * LOAD(w0 + i), a1 += xa * LOAD(w1 + i), a2 += xa * LOAD(w2 + i), a3 += xa * LOAD(w3 + i);
        i += 8;
    }
    float s0 = hsum(a0 + b0), s1 = hsum(a1 + b1), s2 = hsum(a2 + b2), s3 = hsum(a3 + b3);
    for (; i < n; i++) {
        s0 += w0[i] * x[i], s1 += w1[i] * x[i], s2 += w2[i] * x[i], s3 += w3[i] * x[i];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

static void rms_norm(const float *x, const float *restrict w, int n, float eps, float *out) { /* in place is fine */
    float inv = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

/* y[t][r] (+)= W[r] . x[t] for W [out, in] row-major: every weight row is read once for all tokens. */
static void mm(const float *restrict x, int count, int in, const float *restrict w, int out, float *restrict y,
               int accumulate, int stream) {
    float sums[4];
    int r = 0;
    for (; r + 4 <= out; r += 4) {
        for (int t = 0; t < count; t++) {
            dot4(w + (size_t)r * in, x + (size_t)t * in, in, sums, stream);
            float *yt = y + (size_t)t * out + r;
            for (int k = 0; k < 4; k++) yt[k] = accumulate ? yt[k] + sums[k] : sums[k];
        }
    }
    for (; r < out; r++)
        for (int t = 0; t < count; t++) {
            float s = dot(w + (size_t)r * in, x + (size_t)t * in, in);
            y[(size_t)t * out + r] = accumulate ? y[(size_t)t * out + r] + s : s;
        }
}

static void add_rows(float *restrict y, const float *restrict b, int count, int n) {
    for (int t = 0; t < count; t++)
        for (int j = 0; j < n; j++) y[(size_t)t * n + j] += b[j];
}

/* Rotate adjacent (re, im) pairs of `heads` heads by position `p` (FastLM's pair layout). */
static void rope(float *restrict v, int heads, int hd, const float *restrict cos_p, const float *restrict sin_p) {
    for (int h = 0; h < heads; h++) {
        float *restrict x = v + (size_t)h * hd;
        for (int j = 0; j < hd / 2; j++) {
            float re = x[2 * j], im = x[2 * j + 1];
            x[2 * j] = re * cos_p[j] - im * sin_p[j];
            x[2 * j + 1] = re * sin_p[j] + im * cos_p[j];
        }
    }
}

static void head_norms(float *restrict v, int heads, int hd, const float *restrict w, float eps) {
    for (int h = 0; h < heads; h++) rms_norm(v + (size_t)h * hd, w, hd, eps, v + (size_t)h * hd);
}

/* softmax(q . K[:n] * scale) @ V[:n] for one head, into out[hd]. */
static void attend_head(const float *restrict q, const float *restrict keys, const float *restrict values, int n,
                        int hd, float scale, float *restrict scores, float *restrict out, int stream) {
    mm(q, 1, hd, keys, n, scores, 0, stream); /* the keys are a row-major [n, hd] matrix */
    float top = -INFINITY;
    for (int s = 0; s < n; s++) {
        scores[s] *= scale;
        top = scores[s] > top ? scores[s] : top;
    }
    float total = 0.0f;
    for (int s = 0; s < n; s++) {
        scores[s] = expf(scores[s] - top);
        total += scores[s];
    }
    memset(out, 0, sizeof(float) * hd);
    for (int s = 0; s < n; s++) {
        const float *restrict v = values + (size_t)s * hd;
        float p = scores[s];
        for (int d = 0; d < hd; d++) out[d] += p * v[d];
    }
    float inv = 1.0f / total;
    for (int d = 0; d < hd; d++) out[d] *= inv;
}

typedef struct {
    float *x, *h, *qkv, *att, *gate_up, *scores;
} work_t;

static work_t split_work(const model_t *m, int count, float *base) {
    int hd = m->head_dim, width = (m->heads + 2 * m->kv_heads) * hd;
    work_t w;
    w.x = base;
    w.h = w.x + (size_t)count * m->hidden;
    w.qkv = w.h + (size_t)count * m->hidden;
    w.att = w.qkv + (size_t)count * width;
    w.gate_up = w.att + (size_t)count * m->heads * hd;
    w.scores = w.gate_up + (size_t)count * 2 * m->inter;
    return w;
}

/* Floats of scratch memory a call with `count` tokens needs. */
int64_t aigc_work_floats(const model_t *m, int32_t count) {
    int64_t width = (int64_t)(m->heads + 2 * m->kv_heads) * m->head_dim;
    return (int64_t)count * (2 * m->hidden + width + m->heads * m->head_dim + 2 * m->inter) + m->cache_rows;
}

/* Project, normalize, rotate and store keys/values; then attend for every new token. */
static void attention(const model_t *m, const layer_t *l, float *keys, float *values, int count, int pos,
                      work_t *w) {
    int hd = m->head_dim, nq = m->heads, nk = m->kv_heads, width = (nq + 2 * nk) * hd;
    mm(w->h, count, m->hidden, l->qkv, width, w->qkv, 0, m->stream);
    if (l->qkv_bias) add_rows(w->qkv, l->qkv_bias, count, width);
    for (int t = 0; t < count; t++) {
        float *q = w->qkv + (size_t)t * width, *k = q + (size_t)nq * hd, *v = k + (size_t)nk * hd;
        if (l->q_norm) head_norms(q, nq, hd, l->q_norm, m->eps);
        if (l->k_norm) head_norms(k, nk, hd, l->k_norm, m->eps);
        const float *c = m->cos + (size_t)(pos + t) * (hd / 2), *s = m->sin + (size_t)(pos + t) * (hd / 2);
        rope(q, nq + nk, hd, c, s); /* q and k heads are adjacent */
        for (int g = 0; g < nk; g++) {
            size_t row = ((size_t)g * m->cache_rows + pos + t) * hd;
            memcpy(keys + row, k + (size_t)g * hd, sizeof(float) * hd);
            memcpy(values + row, v + (size_t)g * hd, sizeof(float) * hd);
        }
    }
    int group = nq / nk;
    for (int t = 0; t < count; t++) {
        const float *q = w->qkv + (size_t)t * width;
        for (int h = 0; h < nq; h++) {
            size_t base = (size_t)(h / group) * m->cache_rows * hd;
            attend_head(q + (size_t)h * hd, keys + base, values + base, pos + t + 1, hd, m->scale, w->scores,
                        w->att + ((size_t)t * nq + h) * hd, m->stream);
        }
    }
}

static void mlp(const model_t *m, const layer_t *l, int count, work_t *w) {
    int n = m->inter;
    for (int t = 0; t < count; t++) rms_norm(w->x + (size_t)t * m->hidden, l->norm2, m->hidden, m->eps,
                                             w->h + (size_t)t * m->hidden);
    mm(w->h, count, m->hidden, l->gate_up, 2 * n, w->gate_up, 0, m->stream);
    for (int t = 0; t < count; t++) {
        float *g = w->gate_up + (size_t)t * 2 * n, *u = g + n, *a = w->gate_up + (size_t)t * n;
        for (int j = 0; j < n; j++) a[j] = g[j] / (1.0f + expf(-g[j])) * u[j]; /* a[j] overwrites g[j] only */
    }
    /* the activations now sit compacted at [count, n]: rows t > 0 were moved down, in order */
    mm(w->gate_up, count, n, l->down, m->hidden, w->x, 1, m->stream);
}

/* `count` tokens `ids` at cache position `pos`: writes their k/v rows, and the logits of the last `keep`
 * of them into logits [keep, vocab]. */
int32_t aigc_forward(const model_t *m, float *const *keys, float *const *values, const int64_t *ids, int32_t count,
                     int32_t pos, int32_t keep, float *logits, float *scratch) {
    if (count < 1 || pos < 0 || pos + count > m->cache_rows || keep < 1 || keep > count) return 1;
    work_t w = split_work(m, count, scratch);
    int hidden = m->hidden;
    for (int t = 0; t < count; t++) {
        if (ids[t] < 0 || ids[t] >= m->vocab) return 2;
        memcpy(w.x + (size_t)t * hidden, m->embed + (size_t)ids[t] * hidden, sizeof(float) * hidden);
    }
    for (int i = 0; i < m->layers; i++) {
        const layer_t *l = &m->layer[i];
        for (int t = 0; t < count; t++)
            rms_norm(w.x + (size_t)t * hidden, l->norm1, hidden, m->eps, w.h + (size_t)t * hidden);
        attention(m, l, keys[i], values[i], count, pos, &w);
        if (l->o_bias) add_rows(w.x, l->o_bias, count, hidden);
        mm(w.att, count, m->heads * m->head_dim, l->o, hidden, w.x, 1, m->stream);
        mlp(m, l, count, &w);
    }
    for (int t = 0; t < keep; t++)
        rms_norm(w.x + (size_t)(count - keep + t) * hidden, m->final_norm, hidden, m->eps, w.h + (size_t)t * hidden);
    mm(w.h, keep, hidden, m->head, m->vocab, logits, 0, m->stream);
    if (m->head_bias) add_rows(logits, m->head_bias, keep, m->vocab);
    return 0;
}
