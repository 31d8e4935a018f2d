/* server/relay.c -- announcing committed training events on the database, and the listener
 * thread that relays other replicas' announcements to the hub.
 *
 * A listener that lost its session (the database restarted, the network broke) missed what was
 * announced meanwhile, and so did one whose read of the announced rows failed. When it listens again it catches up: for each model with a subscriber
 * here it reads the history rows after the last step its streams got, and checks the model
 * still exists (a missed deletion ends the streams then). The first announcements after that
 * may cover rows the catch-up already sent; those are skipped (`caught`).
 */
#include "relay.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"

#define RELAY_WAIT_MS 250           /* the listener checks for relay_stop() this often */
#define RELAY_PAGE 1000             /* history rows read at once */
#define RELAY_RESYNC_MAX 1024       /* models caught up after a lost session (streams on more
                                       distinct models than that: the rest are not) */
#define RELAY_ORIGIN_BITS 53        /* exact in a JSON number (a double) */

#define RELAY_OPEN_RUNS 64          /* runs elsewhere tracked until their done */

static const char *const kind_names[] = {[RELAY_STEPS] = "steps", [RELAY_DONE] = "done",
                                         [RELAY_DELETED] = "deleted",
                                         [RELAY_BARRIER] = "barrier"};

/* A model caught up after a lost session, and the last step the catch-up sent. */
typedef struct caught {
    int64_t model_id;
    int64_t step;
} caught_t;

struct relay {
    store_t *store;
    events_t *ev;
    const _Atomic int64_t *replica_id;
    int64_t origin;
    store_listener_t *listener;
    pthread_t thread;
    int thread_started;
    atomic_int stop;
    atomic_int listening;      /* the listening session is up */
    /* relay_catch_up() waits on these, which the listener advances: */
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* broadcast when barrier_heard grows or an open run ends */
    int64_t barrier_sent, barrier_heard;
    int64_t open_runs[RELAY_OPEN_RUNS];   /* models whose run elsewhere sent steps, no done */
    int n_open;
    /* The listener thread's own: */
    caught_t caught[RELAY_RESYNC_MAX];
    int n_caught;
    int resync_due;            /* a history read failed: catch up after the next wait */
};

/* ---- payloads ---------------------------------------------------------------------------------- */

int relay_encode(const relay_msg_t *m, char *buf, size_t size, err_t *err)
{
    int n = snprintf(buf, size, "{\"o\":%" PRId64 ",\"r\":%" PRId64 ",\"m\":%" PRId64
                     ",\"e\":\"%s\"", m->origin, m->replica, m->model_id, kind_names[m->kind]);
    if (n >= 0 && (size_t)n < size) {
        if (m->kind == RELAY_STEPS)
            n += snprintf(buf + n, size - (size_t)n, ",\"p\":[%" PRId64 ",%" PRId64 "]}",
                          m->first, m->last);
        else if (m->kind == RELAY_DONE)
            n += snprintf(buf + n, size - (size_t)n, "}\n%s", m->data);
        else if (m->kind == RELAY_BARRIER)
            n += snprintf(buf + n, size - (size_t)n, ",\"t\":%" PRId64 "}", m->token);
        else
            n += snprintf(buf + n, size - (size_t)n, "}");
    }
    if (n < 0 || (size_t)n >= size)
        return err_set(err, ERR_TOOBIG, "event announcement longer than %zu bytes", size - 1);
    return n;
}

/* `v`, named `what` in messages: an integer in [min, 2^53], into `*out`. */
static int json_int(const cJSON *v, const char *what, int64_t min, int64_t *out, err_t *err)
{
    double d = cJSON_IsNumber(v) ? cJSON_GetNumberValue(v) : NAN;
    if (!isfinite(d) || d != floor(d) || d < (double)min || d > 0x1p53)
        return err_set(err, ERR_INVAL, "%s is not an integer of at least %" PRId64, what, min);
    *out = (int64_t)d;
    return 0;
}

static int member_int(const cJSON *o, const char *key, int64_t min, int64_t *out, err_t *err)
{
    return json_int(cJSON_GetObjectItemCaseSensitive(o, key), key, min, out, err);
}

int relay_decode(const char *payload, relay_msg_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    const char *nl = strchr(payload, '\n');
    size_t head_len = nl != NULL ? (size_t)(nl - payload) : strlen(payload);
    cJSON *head = cJSON_ParseWithLength(payload, head_len);
    int rc = 0;
    if (!cJSON_IsObject(head)) {
        rc = err_set(err, ERR_INVAL, "not a JSON object");
        goto out;
    }
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(head, "e"));
    for (int k = RELAY_STEPS; k <= RELAY_BARRIER && kind != NULL; ++k)
        if (strcmp(kind, kind_names[k]) == 0)
            out->kind = (enum relay_kind)k;
    if (out->kind == 0) {
        rc = err_set(err, ERR_INVAL, "\"e\" is not steps, done, deleted or barrier");
        goto out;
    }
    if ((rc = member_int(head, "o", 0, &out->origin, err)) < 0 ||
        (rc = member_int(head, "r", 0, &out->replica, err)) < 0 ||
        (rc = member_int(head, "m", 1, &out->model_id, err)) < 0)
        goto out;
    if (out->kind == RELAY_STEPS) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(head, "p");
        if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) != 2 ||
            (rc = json_int(cJSON_GetArrayItem(p, 0), "p[0]", 0, &out->first, err)) < 0 ||
            (rc = json_int(cJSON_GetArrayItem(p, 1), "p[1]", out->first, &out->last, err)) < 0) {
            rc = err_set(err, ERR_INVAL, "\"p\" is not [first, last]: two steps in order");
            goto out;
        }
    }
    if (out->kind == RELAY_BARRIER && (rc = member_int(head, "t", 1, &out->token, err)) < 0)
        goto out;
    /* Only a done carries data: the event's JSON, passed on as it is. */
    if ((out->kind == RELAY_DONE) != (nl != NULL)) {
        rc = err_set(err, ERR_INVAL, "%s", nl != NULL ? "data after an event without any"
                                                      : "a done without its data");
        goto out;
    }
    if (nl != NULL) {
        cJSON *data = cJSON_ParseWithOpts(nl + 1, NULL, 1);   /* nothing after it */
        int ok = cJSON_IsObject(data);
        cJSON_Delete(data);
        if (!ok || strchr(nl + 1, '\n') != NULL) {
            rc = err_set(err, ERR_INVAL, "the done data is not one line of a JSON object");
            goto out;
        }
        out->data = nl + 1;
    }
out:
    cJSON_Delete(head);
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

/* ---- announcing -------------------------------------------------------------------------------- */

/* Encode `m` (with this process's origin and replica) and send it; in the caller's
 * transaction, if it has one. */
static int announce(relay_t *r, relay_msg_t *m, err_t *err)
{
    m->origin = r->origin;
    m->replica = atomic_load(r->replica_id);
    /* Only a done's data needs the heap. */
    char small[RELAY_HEADER_MAX];
    size_t size = sizeof small + (m->data != NULL ? strlen(m->data) : 0);
    char *payload = size > sizeof small ? malloc(size) : small;
    if (payload == NULL)
        return err_set(err, ERR_NOMEM, "out of memory announcing an event");
    int rc = relay_encode(m, payload, size, err);
    if (rc >= 0)
        rc = store_notify(r->store, RELAY_CHANNEL, payload, err);
    if (payload != small)
        free(payload);
    return rc;
}

int relay_steps(relay_t *r, int64_t model_id, int64_t first, int64_t last, err_t *err)
{
    if (r == NULL)
        return 0;
    relay_msg_t m = {.kind = RELAY_STEPS, .model_id = model_id, .first = first, .last = last};
    return announce(r, &m, err);
}

/* announce() outside a transaction, where nothing waits for the answer: a failure is logged. */
static void announce_logged(relay_t *r, relay_msg_t *m)
{
    err_t err = {0};
    if (announce(r, m, &err) < 0)
        log_msg(LOG_LEVEL_WARN, "model %" PRId64 ": cannot announce its %s to other replicas: %s",
                m->model_id, kind_names[m->kind], err.msg);
}

void relay_done(relay_t *r, int64_t model_id, const cJSON *result, const err_t *failure)
{
    if (r == NULL)
        return;
    /* A train result or an error object is a few hundred bytes (an err_t message is at most
     * 200), far below what a notification carries: the data travels in the payload itself. */
    char *data = events_done_json(model_id, result, failure);
    if (data == NULL)
        return;
    relay_msg_t m = {.kind = RELAY_DONE, .model_id = model_id, .data = data};
    announce_logged(r, &m);
    free(data);
}

void relay_deleted(relay_t *r, int64_t model_id)
{
    if (r == NULL)
        return;
    relay_msg_t m = {.kind = RELAY_DELETED, .model_id = model_id};
    announce_logged(r, &m);
}

/* ---- relaying ---------------------------------------------------------------------------------- */

/* Publish model `id`'s history rows with first <= step <= last to the hub, adding their number
 * to `*count`; returns the last step published, -1 when none was. */
static int64_t publish_history(relay_t *r, int64_t id, int64_t first, int64_t last,
                               int64_t *count)
{
    int64_t after = first - 1, published = -1;
    while (after < last) {
        /* No more rows than steps left: a one-step commit reads one row. */
        uint64_t span = (uint64_t)last - (uint64_t)after;
        store_history_row_t *rows = NULL;
        int64_t n = 0, next = -1;
        err_t err = {0};
        int rc = store_history_list(r->store, id, after, span < RELAY_PAGE ? (int64_t)span
                                                                           : RELAY_PAGE,
                                    &rows, &n, &next, &err);
        if (rc < 0) {
            if (rc != ERR_NOTFOUND) {      /* a deleted model's end comes as its own event */
                log_msg(LOG_LEVEL_WARN, "model %" PRId64 ": cannot read the history to relay "
                        "(caught up later): %s", id, err.msg);
                r->resync_due = 1;
            }
            return published;
        }
        int past = 0;
        for (int64_t i = 0; i < n && !past; ++i) {
            past = rows[i].step > last;
            if (!past) {
                events_progress(r->ev, id, rows[i].step, rows[i].loss);
                published = rows[i].step;
                ++*count;
            }
        }
        free(rows);
        if (past || next < 0)
            return published;
        after = next;
    }
    return published;
}

static caught_t *caught_find(relay_t *r, int64_t model_id)
{
    for (int i = 0; i < r->n_caught; ++i)
        if (r->caught[i].model_id == model_id)
            return &r->caught[i];
    return NULL;
}

/* The session was lost and is back: catch up every model with a subscriber (see the top).
 * Returns how many rows the catch-up published. */
static int64_t resync(relay_t *r)
{
    int64_t ids[RELAY_RESYNC_MAX], rows = 0;
    int n = events_models(r->ev, ids, RELAY_RESYNC_MAX);
    r->n_caught = 0;
    for (int i = 0; i < n; ++i) {
        int64_t version = 0;
        err_t err = {0};
        if (store_model_version(r->store, ids[i], &version, &err) == ERR_NOTFOUND) {
            events_model_deleted(r->ev, ids[i]);
            continue;
        }
        int64_t last = events_last_step(r->ev, ids[i]);
        if (last < 0)
            continue;         /* its streams got no step yet: nothing to go on from */
        int64_t got = publish_history(r, ids[i], last + 1, INT64_MAX, &rows);
        r->caught[r->n_caught++] = (caught_t){.model_id = ids[i], .step = got >= 0 ? got : last};
    }
    return rows;
}

/* ---- runs elsewhere, for relay_catch_up() (r->mu held) -------------------------------------- */

static int open_find(const relay_t *r, int64_t model_id)
{
    for (int i = 0; i < r->n_open; ++i)
        if (r->open_runs[i] == model_id)
            return i;
    return -1;
}

/* A run elsewhere announced steps of `model_id` (`open`), or ended. */
static void open_set(relay_t *r, int64_t model_id, int open)
{
    pthread_mutex_lock(&r->mu);
    int i = open_find(r, model_id);
    if (open && i < 0 && r->n_open < RELAY_OPEN_RUNS)
        r->open_runs[r->n_open++] = model_id;
    else if (!open && i >= 0)
        r->open_runs[i] = r->open_runs[--r->n_open];
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void relay_catch_up(relay_t *r, int64_t model_id)
{
    if (r == NULL || !atomic_load(&r->listening) || !events_wanted(r->ev, model_id))
        return;
    pthread_mutex_lock(&r->mu);
    int64_t token = ++r->barrier_sent;
    pthread_mutex_unlock(&r->mu);
    relay_msg_t m = {.kind = RELAY_BARRIER, .model_id = model_id, .token = token};
    err_t err = {0};
    if (announce(r, &m, &err) < 0)
        return;          /* the database is away: no announcement comes meanwhile either */
    struct timespec until = monotime_deadline(RELAY_CATCH_UP_MS);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (rc != ETIMEDOUT && (r->barrier_heard < token || open_find(r, model_id) >= 0))
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &until);
    /* This run holds the model now: a run elsewhere that never said done (its replica died,
     * or handed the job over) is over all the same. */
    int i = open_find(r, model_id);
    if (i >= 0)
        r->open_runs[i] = r->open_runs[--r->n_open];
    pthread_mutex_unlock(&r->mu);
}

/* ---- the listener -------------------------------------------------------------------------- */

static void on_payload(void *ctx, const char *payload)
{
    relay_t *r = ctx;
    relay_msg_t m;
    err_t err = {0};
    if (relay_decode(payload, &m, &err) < 0) {
        log_msg(LOG_LEVEL_DEBUG, "ignored a notification on %s: %s", RELAY_CHANNEL, err.msg);
        return;
    }
    if (m.kind == RELAY_BARRIER) {
        /* Ours came back: whatever was committed before it has been handled. */
        if (m.origin == r->origin) {
            pthread_mutex_lock(&r->mu);
            if (m.token > r->barrier_heard)
                r->barrier_heard = m.token;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
        }
        return;
    }
    if (m.origin == r->origin || !events_wanted(r->ev, m.model_id))
        return;
    switch (m.kind) {
    case RELAY_STEPS: {
        open_set(r, m.model_id, 1);
        caught_t *c = caught_find(r, m.model_id);
        if (c != NULL && c->step >= m.first) {
            m.first = c->step + 1;            /* the catch-up sent these already */
        } else if (c != NULL) {
            *c = r->caught[--r->n_caught];    /* past the catch-up: nothing more to skip */
        }
        int64_t rows = 0;
        if (m.first <= m.last)
            publish_history(r, m.model_id, m.first, m.last, &rows);
        break;
    }
    case RELAY_DONE:
        events_done_text(r->ev, m.model_id, m.data);
        open_set(r, m.model_id, 0);
        break;
    case RELAY_DELETED:
        events_model_deleted(r->ev, m.model_id);
        open_set(r, m.model_id, 0);
        break;
    case RELAY_BARRIER:
        break;
    }
}

static void *listen_main(void *arg)
{
    relay_t *r = arg;
    int down = 0;
    while (!atomic_load(&r->stop)) {
        err_t err = {0};
        int rc = store_listen_wait(r->listener, RELAY_WAIT_MS, on_payload, r, &err);
        atomic_store(&r->listening, rc >= 0);
        if (rc < 0) {
            if (!down)
                log_msg(LOG_LEVEL_WARN, "event relay: %s; streams here miss other replicas' "
                        "runs until the database is back", err.msg);
            down = 1;
            continue;
        }
        if (rc == STORE_LISTEN_RESUMED) {
            r->resync_due = 0;
            int64_t rows = resync(r);
            log_msg(LOG_LEVEL_INFO, "event relay: listening again; %" PRId64 " missed step "
                    "event(s) caught up", rows);
        } else if (r->resync_due) {
            r->resync_due = 0;
            resync(r);
        }
        down = 0;
    }
    store_thread_end(r->store);
    return NULL;
}

/* A number no other process draws, in practice: 53 random bits. */
static int64_t origin_draw(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
    }
    return (int64_t)(v & ((UINT64_C(1) << RELAY_ORIGIN_BITS) - 1));
}

int relay_new(store_t *store, events_t *ev, const _Atomic int64_t *replica_id, relay_t **out,
              err_t *err)
{
    *out = NULL;
    relay_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for the event relay");
    r->store = store;
    r->ev = ev;
    r->replica_id = replica_id;
    r->origin = origin_draw();
    pthread_mutex_init(&r->mu, NULL);
    monotime_cond_init(&r->cv);
    int rc = store_listen_open(store, RELAY_CHANNEL, &r->listener, err);
    if (rc < 0) {
        relay_free(r);
        return rc;
    }
    atomic_store(&r->listening, 1);
    int prc = pthread_create(&r->thread, NULL, listen_main, r);
    if (prc != 0) {
        relay_free(r);
        return err_set(err, ERR_UNAVAILABLE, "cannot start the event relay thread: %s",
                       strerror(prc));
    }
    r->thread_started = 1;
    *out = r;
    return 0;
}

void relay_stop(relay_t *r)
{
    if (r == NULL || !r->thread_started)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    r->thread_started = 0;
}

void relay_free(relay_t *r)
{
    if (r == NULL)
        return;
    relay_stop(r);
    store_listen_close(r->listener);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
