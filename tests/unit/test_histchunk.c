/* tests/unit/test_histchunk.c -- the packed history chunk: what is packed reads back bit for
 * bit, the shared stride and learning rate are found, a blob of the wrong size is refused, and
 * times convert both ways. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "histchunk.h"
#include "testutil.h"

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Pack rows[0..n-1], check the chunk, read every record back and compare bit for bit. */
static histchunk_t roundtrip(const store_history_row_t *rows, int64_t n)
{
    histchunk_t ch;
    histchunk_plan(rows, n, 1764988597123LL, &ch);
    int64_t bytes = histchunk_bytes(&ch);
    ck_assert_int_eq(bytes, n * histchunk_record_size(&ch));
    unsigned char *buf = malloc((size_t)bytes);
    ck_assert_ptr_nonnull(buf);
    histchunk_pack(&ch, rows, buf);
    ch.data = buf;
    err_t err = {0};
    ck_assert_int_eq(histchunk_check(&ch, bytes, &err), 0);
    ck_assert_str_eq(ch.at, "2025-12-06T02:36:37.123Z");
    for (int64_t i = 0; i < n; ++i) {
        store_history_row_t r;
        histchunk_get(&ch, i, &r);
        ck_assert_int_eq(r.step, rows[i].step);
        ck_assert_int_eq(histchunk_step(&ch, i), rows[i].step);
        ck_assert_msg(same_bits(r.loss, rows[i].loss), "loss of record %lld", (long long)i);
        ck_assert_msg(same_bits(r.grad_norm, rows[i].grad_norm), "grad_norm %lld", (long long)i);
        ck_assert_msg(same_bits(r.learning_rate, rows[i].learning_rate), "lr %lld",
                      (long long)i);
        ck_assert_str_eq(r.at, ch.at);
    }
    free(buf);
    ch.data = NULL;
    return ch;
}

START_TEST(test_even_steps_shared_rate)
{
    store_history_row_t rows[5];
    for (int i = 0; i < 5; ++i)
        rows[i] = (store_history_row_t){.step = 10 + 3 * i, .loss = 1.0 / (i + 1),
                                        .grad_norm = 0.1 * i, .learning_rate = 0.01,
                                        .val_loss = NAN, .val_accuracy = NAN};
    histchunk_t ch = roundtrip(rows, 5);
    ck_assert_int_eq(ch.stride, 3);
    ck_assert_int_eq(ch.lr_shared, 1);
    ck_assert_int_eq(ch.first, 10);
    ck_assert_int_eq(ch.last, 22);
    ck_assert_int_eq(histchunk_record_size(&ch), 16);
}
END_TEST

START_TEST(test_uneven_steps_varying_rate)
{
    store_history_row_t rows[4] = {
        {.step = 0, .loss = 4.0, .grad_norm = 2.0, .learning_rate = 0.1, .val_loss = NAN,
         .val_accuracy = NAN},
        {.step = 1, .loss = NAN, .grad_norm = 1.5, .learning_rate = 0.05, .val_loss = NAN,
         .val_accuracy = NAN},
        {.step = 5, .loss = 1.0, .grad_norm = NAN, .learning_rate = 0.025, .val_loss = NAN,
         .val_accuracy = NAN},
        {.step = 6, .loss = 0.5, .grad_norm = 0.25, .learning_rate = 0.0125, .val_loss = NAN,
         .val_accuracy = NAN},
    };
    histchunk_t ch = roundtrip(rows, 4);
    ck_assert_int_eq(ch.stride, 0);
    ck_assert_int_eq(ch.lr_shared, 0);
    ck_assert_int_eq(ch.val, 0);
    ck_assert_int_eq(histchunk_record_size(&ch), 32);
    /* One record with a validation loss widens every record by it; with an accuracy, by two. */
    rows[2].val_loss = 0.5;
    ch = roundtrip(rows, 4);
    ck_assert_int_eq(ch.val, 1);
    ck_assert_int_eq(histchunk_record_size(&ch), 40);
    rows[3].val_accuracy = 0.75;
    ch = roundtrip(rows, 4);
    ck_assert_int_eq(ch.val, 2);
    ck_assert_int_eq(histchunk_record_size(&ch), 48);
}
END_TEST

START_TEST(test_one_record_and_nan_rate)
{
    store_history_row_t one = {.step = 7, .loss = 2.5, .grad_norm = 1.0, .learning_rate = 0.3,
                               .val_loss = NAN, .val_accuracy = NAN};
    histchunk_t ch = roundtrip(&one, 1);
    ck_assert_int_eq(ch.stride, 1);
    ck_assert_int_eq(ch.lr_shared, 1);
    /* A shared rate that is not a number cannot be the column's value (NULL means "per
     * record"), so each record holds it. */
    store_history_row_t nan_rate[2] = {
        {.step = 0, .learning_rate = NAN, .val_loss = NAN, .val_accuracy = NAN},
        {.step = 1, .learning_rate = NAN, .val_loss = NAN, .val_accuracy = NAN}};
    ch = roundtrip(nan_rate, 2);
    ck_assert_int_eq(ch.lr_shared, 0);
    ck_assert_int_eq(histchunk_record_size(&ch), 24);
}
END_TEST

START_TEST(test_wrong_size_refused)
{
    unsigned char buf[48] = {0};
    histchunk_t ch = {.first = 0, .last = 2, .n = 3, .stride = 1, .lr_shared = 1, .data = buf};
    err_t err = {0};
    ck_assert_int_eq(histchunk_check(&ch, 48, &err), 0);
    ck_assert_int_eq(histchunk_check(&ch, 47, &err), ERR_DB);
    ck_assert_int_eq(err.code, ERR_DB);
    ch.n = 0;
    ck_assert_int_eq(histchunk_check(&ch, 0, &err), ERR_DB);
    ch.n = 3;
    ch.stride = -1;
    ck_assert_int_eq(histchunk_check(&ch, 48, &err), ERR_DB);
    ch.stride = 1;
    ch.val = 3;
    ck_assert_int_eq(histchunk_check(&ch, 48 + 3 * 24, &err), ERR_DB);
}
END_TEST

START_TEST(test_times)
{
    char text[STORE_TIME_MAX];
    int64_t ms = 0;
    ck_assert_int_eq(histchunk_time_ms("2026-11-28T04:36:37.123Z", &ms), 0);
    ck_assert_int_eq(ms, 1795840597123LL);
    histchunk_time_text(ms, text);
    ck_assert_str_eq(text, "2026-11-28T04:36:37.123Z");
    ck_assert_int_eq(histchunk_time_ms("2026-11-28T04:36:37Z", &ms), 0);
    ck_assert_int_eq(ms, 1795840597000LL);
    histchunk_time_text(0, text);
    ck_assert_str_eq(text, "1970-01-01T00:00:00.000Z");
    ck_assert_int_eq(histchunk_time_ms("yesterday", &ms), -1);
}
END_TEST

static Suite *histchunk_suite(void)
{
    Suite *s = suite_create("histchunk");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, test_even_steps_shared_rate);
    tcase_add_test(tc, test_uneven_steps_varying_rate);
    tcase_add_test(tc, test_one_record_and_nan_rate);
    tcase_add_test(tc, test_wrong_size_refused);
    tcase_add_test(tc, test_times);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(histchunk_suite());
}
