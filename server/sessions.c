/* server/sessions.c -- see sessions.h. A short list under one mutex, most recent first. */
#include "sessions.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct sessions {
    pthread_mutex_t mu;
    int max;
    session_t *head;
};

sessions_t *sessions_new(int max)
{
    sessions_t *ss = calloc(1, sizeof *ss);
    if (ss == NULL)
        return NULL;
    pthread_mutex_init(&ss->mu, NULL);
    ss->max = max > 0 ? max : 0;
    return ss;
}

void session_clear(session_t *s)
{
    train_ctx_free(s->tc);
    registry_copy_free(&s->copy);
    if (s->rows != NULL)
        datacache_release(s->dc, s->rows);
    memset(s, 0, sizeof *s);
}

void session_free(session_t *s)
{
    if (s == NULL)
        return;
    session_clear(s);
    free(s);
}

void sessions_free(sessions_t *ss)
{
    if (ss == NULL)
        return;
    for (session_t *s = ss->head, *next; s != NULL; s = next) {
        next = s->next;
        session_free(s);
    }
    pthread_mutex_destroy(&ss->mu);
    free(ss);
}

/* Unlink model `id`'s session; the caller holds the mutex. */
static session_t *unlink_id(sessions_t *ss, int64_t id)
{
    for (session_t **p = &ss->head; *p != NULL; p = &(*p)->next) {
        if ((*p)->id == id) {
            session_t *s = *p;
            *p = s->next;
            s->next = NULL;
            return s;
        }
    }
    return NULL;
}

session_t *sessions_take(sessions_t *ss, int64_t id)
{
    pthread_mutex_lock(&ss->mu);
    session_t *s = unlink_id(ss, id);
    pthread_mutex_unlock(&ss->mu);
    return s;
}

void sessions_put(sessions_t *ss, session_t *s)
{
    session_t *drop = NULL;
    pthread_mutex_lock(&ss->mu);
    session_t *old = unlink_id(ss, s->id);
    if (ss->max > 0) {
        s->next = ss->head;
        ss->head = s;
        s = NULL;
        /* Beyond max: cut the list's tail off (freed outside the lock). */
        int n = 0;
        for (session_t **p = &ss->head; *p != NULL; p = &(*p)->next) {
            if (++n > ss->max) {
                drop = *p;
                *p = NULL;
                break;
            }
        }
    }
    pthread_mutex_unlock(&ss->mu);
    session_free(old);
    session_free(s);
    while (drop != NULL) {
        session_t *next = drop->next;
        session_free(drop);
        drop = next;
    }
}

void sessions_drop(sessions_t *ss, int64_t id)
{
    pthread_mutex_lock(&ss->mu);
    session_t *s = unlink_id(ss, id);
    pthread_mutex_unlock(&ss->mu);
    session_free(s);
}
