/* tests/unit/test_batchjson.c -- batchjson_decode against the path it stands in front of
 * (codec_parse, the route's field check, codec_batch_decode): on every body it either declines
 * or gives exactly their rows and doubles, and it does not decline the plain batches. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batchjson.h"
#include "codec.h"
#include "rng.h"
#include "testutil.h"

typedef struct outcome {
    int ok;
    int32_t rows;
    double *x, *y;
} outcome_t;

/* What POST /batches does without the fast path: parse, only "x" and "y" each once, decode. */
static int slow(const char *text, size_t len, const batchjson_opts_t *o, outcome_t *out)
{
    cJSON *root = NULL;
    err_t err = {0};
    codec_batch_t b = {0};
    memset(out, 0, sizeof *out);
    if (codec_parse(text, len, o->max_depth, &root, &err) < 0)
        return 0;
    int ok = cJSON_IsObject(root);
    for (const cJSON *c = ok ? root->child : NULL; c != NULL && ok; c = c->next) {
        ok = c->string != NULL && (strcmp(c->string, "x") == 0 || strcmp(c->string, "y") == 0);
        for (const cJSON *d = root->child; d != c && ok; d = d->next)
            ok = strcmp(d->string, c->string) != 0;
    }
    if (ok && codec_batch_decode(root, o->n_x, o->n_y, 1, o->max_rows, &b, &err) == 0) {
        out->ok = 1;
        out->rows = b.rows;
        out->x = b.x;
        out->y = b.y;
    }
    cJSON_Delete(root);
    return out->ok;
}

/* The fast path on a copy without a NUL (ASan sees any read past the end), checked against
 * the slow path. Returns 1 when the fast path decoded. */
static int differ(const char *text, size_t len, const batchjson_opts_t *o)
{
    char *copy = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, len);
    double *x = NULL, *y = NULL;
    int32_t rows = -1;
    int fast = batchjson_decode(copy, len, o, &x, &y, &rows);
    free(copy);
    if (!fast) {
        ck_assert_msg(x == NULL && y == NULL && rows == 0, "a declined decode left output");
        return 0;
    }
    outcome_t s;
    slow(text, len, o, &s);
    ck_assert_msg(s.ok, "fast path decoded what the slow path refuses: '%.*s'",
                  (int)(len < 300 ? len : 300), text);
    ck_assert_int_eq(rows, s.rows);
    ck_assert_int_eq(memcmp(x, s.x, (size_t)rows * (size_t)o->n_x * sizeof *x), 0);
    ck_assert_int_eq(memcmp(y, s.y, (size_t)rows * (size_t)o->n_y * sizeof *y), 0);
    free(x);
    free(y);
    free(s.x);
    free(s.y);
    return 1;
}

static void check_fast(const char *text, const batchjson_opts_t *o)
{
    ck_assert_msg(differ(text, strlen(text), o), "declined: '%s'", text);
}

static void check_declined(const char *text, const batchjson_opts_t *o)
{
    ck_assert_msg(!differ(text, strlen(text), o), "decoded: '%s'", text);
}

/* A growing text. */
typedef struct buf {
    char *s;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const char *s)
{
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        b->cap = (b->n + k + 1) * 2;
        b->s = realloc(b->s, b->cap);
        ck_assert_ptr_nonnull(b->s);
    }
    memcpy(b->s + b->n, s, k + 1);
    b->n += k;
}

static void space(buf_t *b, rng_t *r)
{
    static const char *const ws[] = {"", "", "", " ", "\n", "\t", "\r\n", "  \t "};
    put(b, ws[rng_below(r, 8)]);
}

/* One number in one of many printed forms, all in RFC 8259's grammar. */
static void put_number(buf_t *b, rng_t *r)
{
    char t[80];
    double v = (rng_uniform(r) * 2.0 - 1.0) * pow(10.0, (double)rng_below(r, 12) - 6);
    switch (rng_below(r, 10)) {
    case 0:
        snprintf(t, sizeof t, "%.17g", v);
        break;
    case 1:
        snprintf(t, sizeof t, "%.6g", v);
        break;
    case 2:
        snprintf(t, sizeof t, "%.3e", v);
        break;
    case 3:
        snprintf(t, sizeof t, "%.17E", v * 1e250);
        break;
    case 4:
        snprintf(t, sizeof t, "%d", (int)rng_below(r, 3) - 1);
        break;
    case 5: {
        static const char *const fixed[] = {"-0", "0", "-0.0", "0e0", "1E+2", "1e-2",
                                            "4.9e-324", "2.2250738585072014e-308",
                                            "1.7976931348623157e308", "-1.7976931348623157E308",
                                            "9007199254740993", "123456789012345678901234567890",
                                            "0.1000000000000000055511151231257827021181583404541",
                                            "1e-400", "100000000000000000000000e-10"};
        snprintf(t, sizeof t, "%s", fixed[rng_below(r, sizeof fixed / sizeof *fixed)]);
        break;
    }
    case 6: {
        double d;
        uint64_t bits = rng_next(r);
        memcpy(&d, &bits, sizeof d);
        snprintf(t, sizeof t, "%.17g", isfinite(d) ? d : 0.5);
        break;
    }
    default:
        snprintf(t, sizeof t, "%.*g", 1 + (int)rng_below(r, 17), v);
        break;
    }
    put(b, t);
}

static void put_row(buf_t *b, rng_t *r, int32_t n)
{
    put(b, "[");
    for (int32_t j = 0; j < n; ++j) {
        space(b, r);
        if (j > 0) {
            put(b, ",");
            space(b, r);
        }
        put_number(b, r);
        space(b, r);
    }
    put(b, "]");
}

/* A valid batch of `rows` rows in a random layout. */
static void put_batch(buf_t *b, rng_t *r, int32_t rows, int32_t n_x, int32_t n_y)
{
    int y_first = (int)rng_below(r, 2);
    b->n = 0;
    put(b, "");
    space(b, r);
    put(b, "{");
    for (int k = 0; k < 2; ++k) {
        int is_y = (k == 0) == y_first;
        space(b, r);
        if (k > 0) {
            put(b, ",");
            space(b, r);
        }
        put(b, is_y ? "\"y\"" : "\"x\"");
        space(b, r);
        put(b, ":");
        space(b, r);
        put(b, "[");
        for (int32_t i = 0; i < rows; ++i) {
            space(b, r);
            if (i > 0) {
                put(b, ",");
                space(b, r);
            }
            if (is_y && n_y == 1 && rng_below(r, 4) != 0)
                put_number(b, r);
            else
                put_row(b, r, is_y ? n_y : n_x);
            space(b, r);
        }
        put(b, "]");
        space(b, r);
    }
    put(b, "}");
    space(b, r);
}

START_TEST(test_plain_batches_are_decoded)
{
    batchjson_opts_t o = {.n_x = 3, .n_y = 1, .max_rows = 1000, .max_depth = 64};
    check_fast("{\"x\":[[1,2,3],[4,5,6]],\"y\":[0,1]}", &o);
    check_fast(" {\"y\" : [ [0] , 1 ] , \"x\" : [ [ -0 , 1e2 , -2.5E-3 ] , [0.1,0.2,0.3] ] }\n",
               &o);
    double *x = NULL, *y = NULL;
    int32_t rows = 0;
    const char *t = "{\"x\":[[-0,0.5,1e3]],\"y\":[7]}";
    ck_assert_int_eq(batchjson_decode(t, strlen(t), &o, &x, &y, &rows), 1);
    ck_assert_int_eq(rows, 1);
    ck_assert(x[0] == 0.0 && signbit(x[0]));
    ck_assert(x[1] == 0.5 && x[2] == 1000.0 && y[0] == 7.0);
    free(x);
    free(y);
    o.n_y = 2;
    check_fast("{\"x\":[[1,2,3]],\"y\":[[0,1]]}", &o);
    o.max_rows = 2;
    check_fast("{\"x\":[[1,2,3],[1,2,3]],\"y\":[[0,1],[1,0]]}", &o);
    o.max_depth = 3;
    check_fast("{\"x\":[[1,2,3],[1,2,3]],\"y\":[[0,1],[1,0]]}", &o);
    o.max_depth = 0;             /* codec_parse's default */
    check_fast("{\"x\":[[1,2,3],[1,2,3]],\"y\":[[0,1],[1,0]]}", &o);
    /* The longest number cJSON reads whole: 63 characters. */
    char n63[64], body[256];
    memset(n63, '1', 63);
    n63[1] = '.';
    n63[63] = '\0';
    o.n_x = 1;
    o.n_y = 1;
    snprintf(body, sizeof body, "{\"x\":[[%s]],\"y\":[1]}", n63);
    check_fast(body, &o);
}
END_TEST

START_TEST(test_random_valid_batches_match)
{
    rng_t r;
    rng_seed(&r, 20261128);
    buf_t b = {0};
    for (int it = 0; it < 3000; ++it) {
        int32_t n_x = 1 + (int32_t)rng_below(&r, 6), n_y = 1 + (int32_t)rng_below(&r, 3);
        int32_t rows = 1 + (int32_t)rng_below(&r, it % 50 == 0 ? 3000 : 8);
        batchjson_opts_t o = {.n_x = n_x, .n_y = n_y, .max_rows = 5000, .max_depth = 64};
        put_batch(&b, &r, rows, n_x, n_y);
        /* Every form put_number prints is RFC 8259 and finite, so none may be declined. */
        ck_assert_msg(differ(b.s, b.n, &o), "declined: '%.300s'", b.s);
    }
    free(b.s);
}
END_TEST

START_TEST(test_unusual_numbers_are_declined)
{
    static const char *const nums[] = {
        "01", "-01", "00", "1.", "-.5", ".5", "+1", "0x10", "1e", "1e+", "1E-", "--1", "-",
        "1.5.2", "1e5e5", "NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "-1e400",
        "1e309", "true", "false", "null", "\"1\"", "[]", "{}", "1 2", "1-", "1..2", "0.e1",
        "1_000", "\xef\xbb\xbf" "1", "1\x01", "\x01" "1", "n64"};
    batchjson_opts_t o = {.n_x = 2, .n_y = 1, .max_rows = 100, .max_depth = 64};
    char body[256], n64[65];
    /* 64 characters: cJSON cuts it short */
    memset(n64, '0', 64);
    n64[0] = '1';
    n64[1] = '.';
    n64[63] = '1';
    n64[64] = '\0';
    for (size_t k = 0; k < sizeof nums / sizeof *nums; ++k) {
        const char *v = strcmp(nums[k], "n64") == 0 ? n64 : nums[k];
        snprintf(body, sizeof body, "{\"x\":[[1,%s]],\"y\":[1]}", v);
        check_declined(body, &o);
        snprintf(body, sizeof body, "{\"x\":[[1,2]],\"y\":[%s]}", v);
        check_declined(body, &o);
    }
}
END_TEST

START_TEST(test_other_bodies_are_declined)
{
    static const char *const bodies[] = {
        "", " ", "[]", "{}", "null", "1", "\"x\"",
        "{\"x\":[[1,2]]}", "{\"y\":[1]}", "{\"x\":null,\"y\":[1]}", "{\"x\":[[1,2]],\"y\":null}",
        "{\"x\":[],\"y\":[]}", "{\"x\":[[1,2]],\"y\":[]}", "{\"x\":[[1,2]],\"y\":[1,2]}",
        "{\"x\":[[1,2],[3,4]],\"y\":[1]}", "{\"x\":[[1,2],[3]],\"y\":[1,2]}",
        "{\"x\":[[1,2,3]],\"y\":[1]}", "{\"x\":[[1]],\"y\":[1]}", "{\"x\":[[]],\"y\":[1]}",
        "{\"x\":[1,2],\"y\":[1]}", "{\"x\":[[1,2]],\"y\":[[1,2]]}", "{\"x\":[[1,2]],\"y\":[[]]}",
        "{\"x\":[[1,\"2\"]],\"y\":[1]}", "{\"x\":[[1,null]],\"y\":[1]}",
        "{\"x\":[[1,true]],\"y\":[1]}", "{\"x\":[[1,false]],\"y\":[1]}",
        "{\"x\":[[1,[2]]],\"y\":[1]}", "{\"x\":[[1,{}]],\"y\":[1]}", "{\"x\":[[1,2]],\"y\":[{}]}",
        "{\"x\":[[1,2]],\"y\":[1],\"x\":[[1,2]]}", "{\"x\":[[1,2]],\"y\":[1],\"y\":[1]}",
        "{\"x\":[[1,2]],\"y\":[1],\"z\":1}", "{\"z\":1,\"x\":[[1,2]],\"y\":[1]}",
        "{\"\\u0078\":[[1,2]],\"y\":[1]}", "{\"x \":[[1,2]],\"y\":[1]}",
        "{\"X\":[[1,2]],\"y\":[1]}",
        "{\"xx\":[[1,2]],\"y\":[1]}", "{x:[[1,2]],\"y\":[1]}", "{'x':[[1,2]],\"y\":[1]}",
        "\xef\xbb\xbf{\"x\":[[1,2]],\"y\":[1]}", "{\"x\":[[1,2]],\"y\":[1]} x",
        "{\"x\":[[1,2]],\"y\":[1]}}", "{\"x\":[[1,2]],\"y\":[1]},", "{\"x\":[[1,2]],\"y\":[1]}{}",
        "{\"x\":[[1,2],],\"y\":[1]}", "{\"x\":[[1,2,]],\"y\":[1]}", "{\"x\":[[1,2]],\"y\":[1,]}",
        "{\"x\":[[1,2]],\"y\":[1],}", "{,\"x\":[[1,2]],\"y\":[1]}", "{\"x\":[[1 2]],\"y\":[1]}",
        "{\"x\" [[1,2]],\"y\":[1]}", "{\"x\":[[1,2]] \"y\":[1]}", "{\"x\"::[[1,2]],\"y\":[1]}",
        "{\"x\":[[1,2]],\"y\":[1]]", "{\"x\":[[1,2]],\"y\":[1]\x0b}", "\f{\"x\":[[1,2]],\"y\":[1]}",
        "{\"x\":[[1,2]]\x00,\"y\":[1]}", "{\"x\":[[[1],2]],\"y\":[1]}",
        "{\"x\":[[1,2]],\"y\":[[[1]]]}"};
    batchjson_opts_t o = {.n_x = 2, .n_y = 1, .max_rows = 100, .max_depth = 64};
    for (size_t k = 0; k < sizeof bodies / sizeof *bodies; ++k)
        check_declined(bodies[k], &o);
    /* n_y > 1: a bare number is not a row of labels. */
    o.n_y = 2;
    check_declined("{\"x\":[[1,2]],\"y\":[1]}", &o);
    check_declined("{\"x\":[[1,2]],\"y\":[[1]]}", &o);
    check_declined("{\"x\":[[1,2]],\"y\":[[1,2,3]]}", &o);
}
END_TEST

START_TEST(test_limits_are_declined)
{
    const char *t = "{\"x\":[[1,2],[3,4],[5,6]],\"y\":[1,0,1]}";
    batchjson_opts_t o = {.n_x = 2, .n_y = 1, .max_rows = 2, .max_depth = 64};
    check_declined(t, &o);       /* one row over --max-batch-rows */
    o.max_rows = 3;
    check_fast(t, &o);
    o.max_depth = 2;             /* the rows nest three deep */
    check_declined(t, &o);
    o.max_depth = 3;
    check_fast(t, &o);
    o.n_x = 0;
    check_declined(t, &o);
}
END_TEST

/* Every prefix of a small body, and every single-byte change to it: either declined or exact. */
START_TEST(test_truncations_and_mutations)
{
    static const char *const bodies[] = {
        " { \"y\" : [ 1 , [ 0 ] ] , \"x\" : [ [ -0.5e-3 , 2E+2 ] , [ 1.25 , -0 ] ] } ",
        "{\"x\":[[1,2],[3,4]],\"y\":[[0.5,1],[2,3]]}"};
    static const char alphabet[] = "{}[],:\" \t\n0123456789-+.eExyz\\n\x01\xef";
    rng_t r;
    rng_seed(&r, 7);
    for (size_t k = 0; k < sizeof bodies / sizeof *bodies; ++k) {
        batchjson_opts_t o = {.n_x = 2, .n_y = k == 0 ? 1 : 2, .max_rows = 100, .max_depth = 64};
        size_t len = strlen(bodies[k]);
        char m[128];
        ck_assert_int_eq(differ(bodies[k], len, &o), 1);
        for (size_t cut = 0; cut < len; ++cut)
            differ(bodies[k], cut, &o);
        for (size_t at = 0; at < len; ++at) {
            for (size_t a = 0; a < sizeof alphabet - 1; ++a) {
                memcpy(m, bodies[k], len);
                m[at] = alphabet[a];
                differ(m, len, &o);
            }
            /* a byte dropped, a byte doubled */
            memcpy(m, bodies[k], at);
            memcpy(m + at, bodies[k] + at + 1, len - at - 1);
            differ(m, len - 1, &o);
            memcpy(m, bodies[k], at + 1);
            memcpy(m + at + 1, bodies[k] + at, len - at);
            differ(m, len + 1, &o);
        }
        for (int it = 0; it < 20000; ++it) {
            memcpy(m, bodies[k], len);
            for (int e = 1 + (int)rng_below(&r, 3); e > 0; --e)
                m[rng_below(&r, len)] = rng_below(&r, 4) == 0 ? (char)rng_below(&r, 256)
                                               : alphabet[rng_below(&r, sizeof alphabet - 1)];
            differ(m, len, &o);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("batchjson");
    TCase *tc = tcase_create("batchjson");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_plain_batches_are_decoded);
    tcase_add_test(tc, test_random_valid_batches_match);
    tcase_add_test(tc, test_unusual_numbers_are_declined);
    tcase_add_test(tc, test_other_bodies_are_declined);
    tcase_add_test(tc, test_limits_are_declined);
    tcase_add_test(tc, test_truncations_and_mutations);
    suite_add_tcase(s, tc);
    return testutil_run(s);
}
