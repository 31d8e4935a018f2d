/* server/events.c -- the event hub: subscribers, their buffers, keep-alive and probing.
 *
 * Each subscriber has a byte buffer the publishers append to and the HTTP stream's read
 * callback drains; an empty buffer parks the connection until http_stream_wake(). The hub
 * holds the producer reference of every stream and drops it (http_stream_release) once the
 * connection is over. A parked connection is invisible to libmicrohttpd, so a client that
 * leaves an idle stream would only be noticed by the next write; the ticker thread asks the
 * HTTP layer to look at every parked stream's socket twice a second instead.
 */
#include "events.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "monotime.h"

typedef struct sub {
    pthread_mutex_t mu;
    int64_t model_id;
    int64_t last_step;         /* of the last progress event sent, -1 before the first */
    char *buf;
    size_t len, off, cap;
    int dead;                  /* too far behind: abort the stream */
    int ending;                /* the model is gone: end the stream once the buffer drains */
    http_stream_t *stream;     /* producer reference; owned by the hub while listed */
    struct sub *next;
} sub_t;

struct events {
    int64_t max_streams;

    pthread_mutex_t mu;        /* guards subs */
    sub_t *subs;
    atomic_int n_subs;         /* listed subscribers; read without the lock by events_wanted */

    pthread_mutex_t tick_mu;
    pthread_cond_t tick_cv;
    int tick_stop;
    pthread_t ticker;
    int ticker_started;
};

/* ---- one subscriber -------------------------------------------------------------------------- */

static ssize_t sub_read(void *ctx, char *buf, size_t max)
{
    sub_t *s = ctx;
    ssize_t n = 0;
    pthread_mutex_lock(&s->mu);
    if (s->dead) {
        n = HTTP_STREAM_ERROR;
    } else if (s->off < s->len) {
        size_t k = s->len - s->off < max ? s->len - s->off : max;
        memcpy(buf, s->buf + s->off, k);
        s->off += k;
        if (s->off == s->len)
            s->off = s->len = 0;
        n = (ssize_t)k;
    } else if (s->ending) {
        n = HTTP_STREAM_END;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void sub_free(void *ctx)
{
    sub_t *s = ctx;
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

/* Append text to one subscriber (and with `last`, end it after that text); marks it dead when
 * it falls too far behind. */
static void sub_append(sub_t *s, const char *text, size_t len, int last)
{
    pthread_mutex_lock(&s->mu);
    if (s->dead || s->ending)
        goto out;
    if (s->off > 0 && s->off == s->len)
        s->off = s->len = 0;
    if (s->len + len > EVENTS_MAX_BUFFER) {
        s->dead = 1;
        goto out;
    }
    if (s->len + len > s->cap) {
        size_t cap = s->cap == 0 ? 4096 : s->cap;
        while (cap < s->len + len)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (nb == NULL) {
            s->dead = 1;
            goto out;
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->ending = last;
out:
    pthread_mutex_unlock(&s->mu);
}

/* ---- the hub --------------------------------------------------------------------------------- */

/* Unlink the subscribers whose connection is over; returns them as a list for gone_release()
 * (outside the lock: releasing may free). Caller holds ev->mu. */
static sub_t *prune_locked(events_t *ev)
{
    sub_t *gone = NULL;
    for (sub_t **pp = &ev->subs; *pp != NULL;) {
        sub_t *s = *pp;
        if (http_stream_closed(s->stream)) {
            *pp = s->next;
            s->next = gone;
            gone = s;
            atomic_fetch_sub(&ev->n_subs, 1);
        } else {
            pp = &s->next;
        }
    }
    return gone;
}

static void gone_release(sub_t *gone)
{
    while (gone != NULL) {
        sub_t *next = gone->next;
        http_stream_release(gone->stream);   /* may free `gone` */
        gone = next;
    }
}

/* Send `text` to the subscribers of `model_id` (every subscriber when model_id is 0); with
 * `last`, it is their final event; `step` >= 0 is the step of a progress event. Drops those
 * whose client has gone. */
static void hub_send(events_t *ev, int64_t model_id, const char *text, size_t len, int last,
                     int64_t step)
{
    pthread_mutex_lock(&ev->mu);
    sub_t *gone = prune_locked(ev);
    for (sub_t *s = ev->subs; s != NULL; s = s->next) {
        if (model_id == 0 || s->model_id == model_id) {
            sub_append(s, text, len, last);
            http_stream_wake(s->stream);
            if (step >= 0)
                s->last_step = step;
        }
    }
    pthread_mutex_unlock(&ev->mu);
    gone_release(gone);
}

/* Look at every parked stream's client, then drop the streams that are over. */
static void hub_probe(events_t *ev)
{
    pthread_mutex_lock(&ev->mu);
    for (sub_t *s = ev->subs; s != NULL; s = s->next)
        http_stream_probe(s->stream);
    sub_t *gone = prune_locked(ev);
    pthread_mutex_unlock(&ev->mu);
    gone_release(gone);
}

int events_subscribe(events_t *ev, http_req_t *req, int64_t model_id, err_t *err)
{
    static const char hello[] = ": connected\n\n";
    pthread_mutex_lock(&ev->mu);
    sub_t *gone = prune_locked(ev);
    int full = atomic_load(&ev->n_subs) >= ev->max_streams;
    pthread_mutex_unlock(&ev->mu);
    gone_release(gone);
    if (full) {
        http_set_header(req, "Retry-After", "1");
        return err_set(err, ERR_BUSY, "%" PRId64 " event stream%s already open "
                       "(--max-streams): close one or try again later", ev->max_streams,
                       ev->max_streams == 1 ? " is" : "s are");
    }
    sub_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for an event stream");
    pthread_mutex_init(&s->mu, NULL);
    s->model_id = model_id;
    s->last_step = -1;
    sub_append(s, hello, sizeof hello - 1, 0);
    http_stream_t *stream = NULL;
    int rc = http_reply_stream(req, 200, "text/event-stream; charset=utf-8", sub_read, s, sub_free,
                               &stream);
    if (rc < 0) {
        sub_free(s);
        return err_set(err, rc, "cannot open an event stream");
    }
    s->stream = stream;
    http_set_header(req, "X-Accel-Buffering", "no");
    /* A stream that ends (its model deleted) ends the connection too: an EventSource reconnects
     * on a fresh one, and nothing else was going to use this one. */
    http_set_header(req, "Connection", "close");
    /* Checked and counted apart, so two racing subscriptions may pass one over the cap: a
     * soft bound, which is all the health probe's room needs. */
    pthread_mutex_lock(&ev->mu);
    s->next = ev->subs;
    ev->subs = s;
    atomic_fetch_add(&ev->n_subs, 1);
    pthread_mutex_unlock(&ev->mu);
    return 0;
}

int events_wanted(events_t *ev, int64_t model_id)
{
    if (ev == NULL || atomic_load(&ev->n_subs) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&ev->mu);
    for (sub_t *s = ev->subs; s != NULL && !found; s = s->next)
        found = s->model_id == model_id;
    pthread_mutex_unlock(&ev->mu);
    return found;
}

void events_progress(events_t *ev, int64_t model_id, int64_t step, double loss)
{
    if (!events_wanted(ev, model_id))
        return;
    char text[160];
    char num[40] = "null";
    if (isfinite(loss))
        codec_format_double(loss, num, sizeof num);
    int n = snprintf(text, sizeof text,
                     "event: progress\ndata: {\"step\":%" PRId64 ",\"loss\":%s}\n\n", step, num);
    if (n > 0 && (size_t)n < sizeof text)
        hub_send(ev, model_id, text, (size_t)n, 0, step);
}

int64_t events_last_step(events_t *ev, int64_t model_id)
{
    int64_t last = -1;
    if (ev == NULL)
        return last;
    pthread_mutex_lock(&ev->mu);
    for (sub_t *s = ev->subs; s != NULL; s = s->next)
        if (s->model_id == model_id && s->last_step > last)
            last = s->last_step;
    pthread_mutex_unlock(&ev->mu);
    return last;
}

int events_models(events_t *ev, int64_t *ids, int max)
{
    int n = 0;
    if (ev == NULL)
        return n;
    pthread_mutex_lock(&ev->mu);
    for (sub_t *s = ev->subs; s != NULL && n < max; s = s->next) {
        int seen = 0;
        for (int i = 0; i < n && !seen; ++i)
            seen = ids[i] == s->model_id;
        if (!seen)
            ids[n++] = s->model_id;
    }
    pthread_mutex_unlock(&ev->mu);
    return n;
}

/* Send `event: <name>` with `json` (one line of JSON) to model_id's streams. */
static void send_text(events_t *ev, int64_t model_id, const char *name, const char *json,
                      int last)
{
    size_t len = strlen(json) + strlen(name) + 32;
    char *text = malloc(len);
    if (text != NULL) {
        int n = snprintf(text, len, "event: %s\ndata: %s\n\n", name, json);
        if (n > 0 && (size_t)n < len)
            hub_send(ev, model_id, text, (size_t)n, last, -1);
    }
    free(text);
}

/* send_text() of `data`, serialised here. */
static void send_json(events_t *ev, int64_t model_id, const char *name, const cJSON *data,
                      int last)
{
    char *json = data != NULL ? cJSON_PrintUnformatted(data) : NULL;
    if (json != NULL)
        send_text(ev, model_id, name, json, last);
    free(json);
}

char *events_done_json(int64_t model_id, const cJSON *result, const err_t *failure)
{
    if (failure == NULL)
        return result != NULL ? cJSON_PrintUnformatted(result) : NULL;
    char *json = NULL;
    cJSON *data = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(data, "error");
    if (cJSON_AddNumberToObject(data, "model_id", (double)model_id) != NULL && e != NULL &&
        cJSON_AddStringToObject(e, "code", http_error_code(failure->code)) != NULL &&
        cJSON_AddStringToObject(e, "message", failure->msg[0] != '\0' ? failure->msg
                                                                      : err_str(failure->code))
            != NULL)
        json = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    return json;
}

void events_done(events_t *ev, int64_t model_id, const cJSON *result, const err_t *failure)
{
    if (!events_wanted(ev, model_id))
        return;
    char *json = events_done_json(model_id, result, failure);
    events_done_text(ev, model_id, json);
    free(json);
}

void events_done_text(events_t *ev, int64_t model_id, const char *data)
{
    if (data != NULL && events_wanted(ev, model_id))
        send_text(ev, model_id, "done", data, 0);
}

void events_model_deleted(events_t *ev, int64_t model_id)
{
    if (!events_wanted(ev, model_id))
        return;
    cJSON *data = cJSON_CreateObject();
    if (cJSON_AddNumberToObject(data, "model_id", (double)model_id) != NULL)
        send_json(ev, model_id, "deleted", data, 1);
    cJSON_Delete(data);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void *ticker_main(void *arg)
{
    static const char keepalive[] = ": keep-alive\n\n";
    events_t *ev = arg;
    struct timespec next_keepalive;
    clock_gettime(CLOCK_MONOTONIC, &next_keepalive);
    next_keepalive.tv_sec += EVENTS_KEEPALIVE_S;
    pthread_mutex_lock(&ev->tick_mu);
    while (!ev->tick_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)EVENTS_PROBE_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        int rc = 0;
        while (!ev->tick_stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&ev->tick_cv, &ev->tick_mu, &until);
        if (ev->tick_stop)
            break;
        pthread_mutex_unlock(&ev->tick_mu);
        hub_probe(ev);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next_keepalive.tv_sec ||
            (now.tv_sec == next_keepalive.tv_sec && now.tv_nsec >= next_keepalive.tv_nsec)) {
            hub_send(ev, 0, keepalive, sizeof keepalive - 1, 0, -1);
            next_keepalive = now;
            next_keepalive.tv_sec += EVENTS_KEEPALIVE_S;
        }
        pthread_mutex_lock(&ev->tick_mu);
    }
    pthread_mutex_unlock(&ev->tick_mu);
    return NULL;
}

int events_new(int64_t max_streams, events_t **out, err_t *err)
{
    *out = NULL;
    if (max_streams < 1)
        return err_set(err, ERR_INVAL, "max_streams=%" PRId64 " must be at least 1", max_streams);
    events_t *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for the event hub");
    ev->max_streams = max_streams;
    pthread_mutex_init(&ev->mu, NULL);
    pthread_mutex_init(&ev->tick_mu, NULL);
    monotime_cond_init(&ev->tick_cv);
    int prc = pthread_create(&ev->ticker, NULL, ticker_main, ev);
    if (prc != 0) {
        events_free(ev);
        return err_set(err, ERR_UNAVAILABLE, "cannot start the keep-alive thread: %s",
                       strerror(prc));
    }
    ev->ticker_started = 1;
    *out = ev;
    return 0;
}

void events_shutdown(events_t *ev)
{
    if (ev == NULL || !ev->ticker_started)
        return;
    pthread_mutex_lock(&ev->tick_mu);
    ev->tick_stop = 1;
    pthread_cond_signal(&ev->tick_cv);
    pthread_mutex_unlock(&ev->tick_mu);
    pthread_join(ev->ticker, NULL);
    ev->ticker_started = 0;
}

void events_free(events_t *ev)
{
    if (ev == NULL)
        return;
    events_shutdown(ev);
    /* The server is gone: only drop our references, never look at a stream again. */
    sub_t *subs = ev->subs;
    ev->subs = NULL;
    while (subs != NULL) {
        sub_t *next = subs->next;
        http_stream_release(subs->stream);
        subs = next;
    }
    pthread_cond_destroy(&ev->tick_cv);
    pthread_mutex_destroy(&ev->tick_mu);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}
