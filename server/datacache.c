/* server/datacache.c -- see datacache.h. One mutex; entries in a list in recency order (few
 * models train at once, so a list beats a hash table here). */
#include "datacache.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct node {
    datacache_entry_t e;         /* first: an entry pointer is its node */
    int64_t id;
    store_data_stamp_t stamp;
    int64_t bytes;
    int refs;
    int stale;                   /* replaced or dropped: freed at the last release */
    struct node *prev, *next;    /* recency list, most recent first; stale nodes are not in it */
} node_t;

struct datacache {
    pthread_mutex_t mu;
    int64_t budget;
    int64_t idle_bytes;          /* bytes of listed entries not in use */
    node_t *head, *tail;
};

datacache_t *datacache_new(int64_t budget)
{
    datacache_t *dc = calloc(1, sizeof *dc);
    if (dc == NULL)
        return NULL;
    pthread_mutex_init(&dc->mu, NULL);
    dc->budget = budget > 0 ? budget : 0;
    return dc;
}

static void node_free(node_t *n)
{
    free((double *)n->e.x);
    free((double *)n->e.y);
    free(n);
}

static void unlink_node(datacache_t *dc, node_t *n)
{
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        dc->head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        dc->tail = n->prev;
    n->prev = n->next = NULL;
}

static void push_front(datacache_t *dc, node_t *n)
{
    n->prev = NULL;
    n->next = dc->head;
    if (dc->head != NULL)
        dc->head->prev = n;
    dc->head = n;
    if (dc->tail == NULL)
        dc->tail = n;
}

/* Take `n` out of the list; freed now when unused, else at its last release. */
static void retire(datacache_t *dc, node_t *n)
{
    unlink_node(dc, n);
    if (n->refs == 0) {
        dc->idle_bytes -= n->bytes;
        node_free(n);
    } else {
        n->stale = 1;
    }
}

/* Drop least recently used idle entries until the idle ones fit the budget. */
static void shrink(datacache_t *dc)
{
    node_t *n = dc->tail;
    while (dc->idle_bytes > dc->budget && n != NULL) {
        node_t *prev = n->prev;
        if (n->refs == 0)
            retire(dc, n);
        n = prev;
    }
}

void datacache_free(datacache_t *dc)
{
    if (dc == NULL)
        return;
    for (node_t *n = dc->head, *next; n != NULL; n = next) {
        next = n->next;
        node_free(n);
    }
    pthread_mutex_destroy(&dc->mu);
    free(dc);
}

static node_t *find(datacache_t *dc, int64_t id)
{
    for (node_t *n = dc->head; n != NULL; n = n->next)
        if (n->id == id)
            return n;
    return NULL;
}

const datacache_entry_t *datacache_get(datacache_t *dc, int64_t id, const store_data_stamp_t *stamp,
                                       int32_t n_x, int32_t n_y)
{
    pthread_mutex_lock(&dc->mu);
    node_t *n = find(dc, id);
    if (n != NULL && (n->stamp.batches != stamp->batches || n->stamp.last_id != stamp->last_id ||
                      n->e.n_x != n_x || n->e.n_y != n_y)) {
        retire(dc, n);
        n = NULL;
    }
    if (n != NULL) {
        if (n->refs++ == 0)
            dc->idle_bytes -= n->bytes;
        unlink_node(dc, n);
        push_front(dc, n);
    }
    pthread_mutex_unlock(&dc->mu);
    return n != NULL ? &n->e : NULL;
}

const datacache_entry_t *datacache_put(datacache_t *dc, int64_t id, const store_data_stamp_t *stamp,
                                       int64_t rows, int64_t val_rows, int32_t n_x, int32_t n_y,
                                       double *x, double *y)
{
    node_t *n = calloc(1, sizeof *n);
    if (n == NULL) {
        free(x);
        free(y);
        return NULL;
    }
    n->e = (datacache_entry_t){.rows = rows, .val_rows = val_rows, .n_x = n_x, .n_y = n_y,
                               .x = x, .y = y, .val_x = x + rows * n_x,
                               .val_y = y != NULL ? y + rows * n_y : NULL};
    n->id = id;
    n->stamp = *stamp;
    n->bytes = (rows + val_rows) * (int64_t)(n_x + n_y) * (int64_t)sizeof(double);
    n->refs = 1;
    pthread_mutex_lock(&dc->mu);
    node_t *old = find(dc, id);
    if (old != NULL)
        retire(dc, old);
    push_front(dc, n);
    pthread_mutex_unlock(&dc->mu);
    return &n->e;
}

void datacache_release(datacache_t *dc, const datacache_entry_t *e)
{
    if (e == NULL)
        return;
    node_t *n = (node_t *)e;
    pthread_mutex_lock(&dc->mu);
    if (--n->refs == 0) {
        if (n->stale) {
            node_free(n);
        } else {
            dc->idle_bytes += n->bytes;
            shrink(dc);
        }
    }
    pthread_mutex_unlock(&dc->mu);
}

void datacache_drop(datacache_t *dc, int64_t id)
{
    pthread_mutex_lock(&dc->mu);
    node_t *n = find(dc, id);
    if (n != NULL)
        retire(dc, n);
    pthread_mutex_unlock(&dc->mu);
}

int datacache_rows(datacache_t *dc, store_t *st, int64_t id, int32_t n_x, int32_t n_y,
                   const datacache_entry_t **out, err_t *err)
{
    *out = NULL;
    store_data_stamp_t stamp;
    int rc = store_batch_stamp(st, id, &stamp, err);
    if (rc < 0)
        return rc;
    if ((*out = datacache_get(dc, id, &stamp, n_x, n_y)) != NULL)
        return 0;
    int64_t rows = 0, val_rows = 0;
    double *x = NULL, *y = NULL;
    if ((rc = store_batch_load_all(st, id, n_x, n_y, &rows, &val_rows, &x, &y, &stamp, err)) < 0 ||
        rows + val_rows == 0)
        return rc;
    *out = datacache_put(dc, id, &stamp, rows, val_rows, n_x, n_y, x, y);
    if (*out == NULL)
        return err_set(err, ERR_NOMEM, "out of memory keeping %" PRId64 " rows", rows);
    return 0;
}
