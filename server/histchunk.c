/* server/histchunk.c -- the packed history chunk codec (see histchunk.h). */
#include "histchunk.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "chunks hold little-endian numbers written by memcpy");

int64_t histchunk_record_size(const histchunk_t *ch)
{
    return 16 + (ch->stride == 0 ? 8 : 0) + 8 * (int64_t)ch->val + (ch->lr_shared ? 0 : 8);
}

int64_t histchunk_bytes(const histchunk_t *ch)
{
    return ch->n * histchunk_record_size(ch);
}

void histchunk_plan(const store_history_row_t *rows, int64_t n, int64_t at_ms, histchunk_t *ch)
{
    *ch = (histchunk_t){.first = rows[0].step, .last = rows[n - 1].step, .n = n, .at_ms = at_ms,
                        .lr_shared = 1, .lr = rows[0].learning_rate};
    /* The widest record any row needs: a row without validation values stores NaN there. */
    for (int64_t i = 0; i < n; ++i) {
        if (!isnan(rows[i].val_accuracy))
            ch->val = 2;
        else if (!isnan(rows[i].val_loss) && ch->val < 1)
            ch->val = 1;
    }
    ch->stride = n > 1 ? rows[1].step - rows[0].step : 1;
    for (int64_t i = 1; i < n; ++i) {
        if (rows[i].step - rows[i - 1].step != ch->stride)
            ch->stride = 0;
        if (memcmp(&rows[i].learning_rate, &ch->lr, sizeof ch->lr) != 0)
            ch->lr_shared = 0;
    }
    if (!isfinite(ch->lr))
        ch->lr_shared = 0;    /* the column's NULL means "per record" */
}

void histchunk_pack(const histchunk_t *ch, const store_history_row_t *rows, unsigned char *buf)
{
    unsigned char *p = buf;
    for (int64_t i = 0; i < ch->n; ++i) {
        if (ch->stride == 0) {
            memcpy(p, &rows[i].step, 8);
            p += 8;
        }
        memcpy(p, &rows[i].loss, 8);
        memcpy(p + 8, &rows[i].grad_norm, 8);
        p += 16;
        if (ch->val >= 1)
            memcpy(p, &rows[i].val_loss, 8);
        if (ch->val >= 2)
            memcpy(p + 8, &rows[i].val_accuracy, 8);
        p += 8 * ch->val;
        if (!ch->lr_shared) {
            memcpy(p, &rows[i].learning_rate, 8);
            p += 8;
        }
    }
}

int histchunk_check(histchunk_t *ch, int64_t bytes, err_t *err)
{
    if (ch->val < 0 || ch->val > 2)
        return err_set(err, ERR_DB, "history chunk at step %" PRId64 " has val %d", ch->first,
                       ch->val);
    if (ch->n < 1 || ch->stride < 0 || (ch->data == NULL && bytes > 0) ||
        bytes != histchunk_bytes(ch))
        return err_set(err, ERR_DB, "history chunk at step %" PRId64 " of %" PRId64
                       " records has %" PRId64 " bytes", ch->first, ch->n, bytes);
    histchunk_time_text(ch->at_ms, ch->at);
    return 0;
}

void histchunk_get(const histchunk_t *ch, int64_t i, store_history_row_t *r)
{
    const unsigned char *p = ch->data + i * histchunk_record_size(ch);
    if (ch->stride > 0) {
        r->step = ch->first + i * ch->stride;
    } else {
        memcpy(&r->step, p, 8);
        p += 8;
    }
    memcpy(&r->loss, p, 8);
    memcpy(&r->grad_norm, p + 8, 8);
    p += 16;
    r->val_loss = r->val_accuracy = NAN;
    if (ch->val >= 1)
        memcpy(&r->val_loss, p, 8);
    if (ch->val >= 2)
        memcpy(&r->val_accuracy, p + 8, 8);
    p += 8 * ch->val;
    if (ch->lr_shared)
        r->learning_rate = ch->lr;
    else
        memcpy(&r->learning_rate, p, 8);
    memcpy(r->at, ch->at, STORE_TIME_MAX);
}

int64_t histchunk_step(const histchunk_t *ch, int64_t i)
{
    if (ch->stride > 0)
        return ch->first + i * ch->stride;
    int64_t step;
    memcpy(&step, ch->data + i * histchunk_record_size(ch), 8);
    return step;
}

void histchunk_time_text(int64_t ms, char buf[STORE_TIME_MAX])
{
    int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, STORE_TIME_MAX, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(buf, STORE_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, STORE_TIME_MAX - n, ".%03dZ", (int)(ms - sec * 1000));
}

int histchunk_time_ms(const char *text, int64_t *ms)
{
    struct tm tm = {0};
    int msec = 0, used = 0;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    if (text[used] == '.' && sscanf(text + used, ".%3d", &msec) != 1)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *ms = (int64_t)timegm(&tm) * 1000 + msec;
    return 0;
}
