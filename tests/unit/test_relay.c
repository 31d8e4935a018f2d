/* tests/unit/test_relay.c -- the payloads replicas announce training events with
 * (server/relay.c): each kind is written as documented and reads back field for field, a done
 * carries its event data byte for byte, and whatever relay_encode() does not make is refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "relay.h"
#include "testutil.h"

/* Encode `m` into a payload that must fit, check its text, decode it back into `*out`. */
static void roundtrip(const relay_msg_t *m, const char *want_text, char *buf, size_t size,
                      relay_msg_t *out)
{
    err_t err = {0};
    int n = relay_encode(m, buf, size, &err);
    ck_assert_msg(n > 0, "%s", err.msg);
    ck_assert_int_eq(n, (int)strlen(buf));
    ck_assert_str_eq(buf, want_text);
    ck_assert_msg(relay_decode(buf, out, &err) == 0, "%s: %s", buf, err.msg);
    ck_assert_int_eq(out->kind, m->kind);
    ck_assert_int_eq(out->origin, m->origin);
    ck_assert_int_eq(out->replica, m->replica);
    ck_assert_int_eq(out->model_id, m->model_id);
}

START_TEST(test_steps)
{
    char buf[256];
    relay_msg_t m = {.kind = RELAY_STEPS, .origin = 9007199254740992LL, .replica = 3,
                     .model_id = 42, .first = 100, .last = 199}, got;
    roundtrip(&m, "{\"o\":9007199254740992,\"r\":3,\"m\":42,\"e\":\"steps\",\"p\":[100,199]}",
              buf, sizeof buf, &got);
    ck_assert_int_eq(got.first, 100);
    ck_assert_int_eq(got.last, 199);
    ck_assert_ptr_null(got.data);
    /* One recorded step: first == last. */
    m.first = m.last = 7;
    roundtrip(&m, "{\"o\":9007199254740992,\"r\":3,\"m\":42,\"e\":\"steps\",\"p\":[7,7]}",
              buf, sizeof buf, &got);
    ck_assert_int_eq(got.first, 7);
    ck_assert_int_eq(got.last, 7);
}
END_TEST

START_TEST(test_done_carries_its_data)
{
    char buf[512];
    const char *data = "{\"model_id\":5,\"steps_run\":3,\"step\":3,\"loss_before\":281.7000511808419,"
                       "\"loss_after\":118.75020113004373,\"stopped\":\"max_steps\","
                       "\"elapsed_ms\":0.8}";
    relay_msg_t m = {.kind = RELAY_DONE, .origin = 1, .replica = 0, .model_id = 5,
                     .data = data}, got;
    char want[512];
    snprintf(want, sizeof want, "{\"o\":1,\"r\":0,\"m\":5,\"e\":\"done\"}\n%s", data);
    roundtrip(&m, want, buf, sizeof buf, &got);
    ck_assert_ptr_nonnull(got.data);
    ck_assert_str_eq(got.data, data);          /* as it was: no number printed again */
    ck_assert_ptr_eq(got.data, strchr(buf, '\n') + 1);
}
END_TEST

START_TEST(test_done_of_a_failure)
{
    err_t failure = {0};
    err_set(&failure, ERR_UNAVAILABLE, "database unreachable while committing: \"gone\"");
    char *data = events_done_json(8, NULL, &failure);
    ck_assert_ptr_nonnull(data);
    ck_assert_str_eq(data, "{\"error\":{\"code\":\"unavailable\",\"message\":\"database "
                           "unreachable while committing: \\\"gone\\\"\"},\"model_id\":8}");
    char buf[512], want[512];
    relay_msg_t m = {.kind = RELAY_DONE, .origin = 77, .replica = 2, .model_id = 8,
                     .data = data}, got;
    snprintf(want, sizeof want, "{\"o\":77,\"r\":2,\"m\":8,\"e\":\"done\"}\n%s", data);
    roundtrip(&m, want, buf, sizeof buf, &got);
    ck_assert_str_eq(got.data, data);
    free(data);
}
END_TEST

START_TEST(test_deleted)
{
    char buf[128];
    relay_msg_t m = {.kind = RELAY_DELETED, .origin = 12345, .replica = 1, .model_id = 9}, got;
    roundtrip(&m, "{\"o\":12345,\"r\":1,\"m\":9,\"e\":\"deleted\"}", buf, sizeof buf, &got);
    ck_assert_ptr_null(got.data);
}
END_TEST

START_TEST(test_barrier)
{
    char buf[128];
    relay_msg_t m = {.kind = RELAY_BARRIER, .origin = 12345, .replica = 1, .model_id = 9,
                     .token = 31}, got;
    roundtrip(&m, "{\"o\":12345,\"r\":1,\"m\":9,\"e\":\"barrier\",\"t\":31}", buf,
              sizeof buf, &got);
    ck_assert_int_eq(got.token, 31);
    ck_assert_ptr_null(got.data);
}
END_TEST

START_TEST(test_largest_header_fits)
{
    char buf[RELAY_HEADER_MAX];
    err_t err = {0};
    relay_msg_t m = {.kind = RELAY_STEPS, .origin = 9007199254740992LL, .replica = INT64_MAX,
                     .model_id = INT64_MAX, .first = INT64_MAX, .last = INT64_MAX};
    ck_assert_int_gt(relay_encode(&m, buf, sizeof buf, &err), 0);
    m.kind = RELAY_DELETED;
    ck_assert_int_gt(relay_encode(&m, buf, sizeof buf, &err), 0);
    m.kind = RELAY_BARRIER;
    m.token = INT64_MAX;
    ck_assert_int_gt(relay_encode(&m, buf, sizeof buf, &err), 0);
    m = (relay_msg_t){.kind = RELAY_DONE, .origin = 9007199254740992LL, .replica = INT64_MAX,
                      .model_id = INT64_MAX, .data = ""};
    ck_assert_int_gt(relay_encode(&m, buf, sizeof buf, &err), 0);
}
END_TEST

START_TEST(test_too_long_for_the_buffer)
{
    char buf[40];
    err_t err = {0};
    relay_msg_t m = {.kind = RELAY_STEPS, .origin = 123456789, .replica = 3, .model_id = 42,
                     .first = 100, .last = 199};
    ck_assert_int_eq(relay_encode(&m, buf, sizeof buf, &err), ERR_TOOBIG);
    m = (relay_msg_t){.kind = RELAY_DONE, .origin = 1, .model_id = 1, .data = "{\"a\":1}"};
    ck_assert_int_eq(relay_encode(&m, buf, 30, &err), ERR_TOOBIG);
}
END_TEST

START_TEST(test_refused)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[1,2]",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"progress\"}",              /* unknown kind */
        "{\"o\":1,\"r\":1,\"m\":1}",                                  /* no kind */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":7}",
        "{\"o\":1,\"r\":1,\"e\":\"deleted\"}",                        /* no model */
        "{\"o\":1,\"r\":1,\"m\":0,\"e\":\"deleted\"}",                /* model 0 */
        "{\"o\":1,\"r\":1,\"m\":1.5,\"e\":\"deleted\"}",
        "{\"o\":1,\"r\":1,\"m\":\"1\",\"e\":\"deleted\"}",
        "{\"o\":-1,\"r\":1,\"m\":1,\"e\":\"deleted\"}",
        "{\"o\":1,\"r\":-2,\"m\":1,\"e\":\"deleted\"}",
        "{\"o\":1e400,\"r\":1,\"m\":1,\"e\":\"deleted\"}",            /* infinite */
        "{\"o\":18014398509481984,\"r\":1,\"m\":1,\"e\":\"deleted\"}", /* past 2^53 */
        "{\"r\":1,\"m\":1,\"e\":\"deleted\"}",                        /* no origin */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\"}",                  /* no steps */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[5]}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[5,6,7]}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[9,3]}",      /* out of order */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[-1,3]}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[\"1\",3]}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":{\"a\":1,\"b\":2}}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"steps\",\"p\":[1,2]}\n{}",  /* data on steps */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"deleted\"}\n{}",            /* data on deleted */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"done\"}",                   /* done without data */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"done\"}\n[1]",              /* data not an object */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"done\"}\n{\"a\":",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"done\"}\n{}\n{}",           /* two lines of data */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"done\"}\n{} x",             /* more after it */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"barrier\"}",                /* no token */
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"barrier\",\"t\":0}",
        "{\"o\":1,\"r\":1,\"m\":1,\"e\":\"barrier\",\"t\":2}\n{}",     /* data on a barrier */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        relay_msg_t got = {.kind = RELAY_STEPS, .model_id = 99};
        err_t err = {0};
        ck_assert_msg(relay_decode(bad[i], &got, &err) == ERR_INVAL, "accepted: %s", bad[i]);
        ck_assert_msg(err.msg[0] != '\0', "no reason given for: %s", bad[i]);
        ck_assert_int_eq(got.kind, 0);              /* nothing half-read is left */
        ck_assert_int_eq(got.model_id, 0);
        ck_assert_ptr_null(got.data);
    }
}
END_TEST

static Suite *relay_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("payloads");
    tcase_add_test(tc, test_steps);
    tcase_add_test(tc, test_done_carries_its_data);
    tcase_add_test(tc, test_done_of_a_failure);
    tcase_add_test(tc, test_deleted);
    tcase_add_test(tc, test_barrier);
    tcase_add_test(tc, test_largest_header_fits);
    tcase_add_test(tc, test_too_long_for_the_buffer);
    tcase_add_test(tc, test_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(relay_suite());
}
