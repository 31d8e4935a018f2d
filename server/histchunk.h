/* server/histchunk.h -- the packed history chunk: the records of one history append in one BLOB.
 *
 * What a chunk's records share is stored once, in the chunk's header columns (see
 * schema/sqlite/002_history_chunks.sql and 003_validation.sql): the time of the append, the step
 * stride when the steps are evenly spaced, the learning rate when it is constant, and how many
 * validation values each record carries. Record layout, little-endian: [step int64, when
 * stride = 0] loss float64, grad_norm float64, [val_loss float64, when val >= 1]
 * [val_accuracy float64, when val = 2] [learning_rate float64, when the learning rate is not
 * shared]. Pure encoding and decoding: no I/O.
 *
 *     histchunk_t ch;
 *     histchunk_plan(rows, n, at_ms, &ch);                  // header: stride, shared lr, ...
 *     unsigned char *buf = malloc(histchunk_bytes(&ch));
 *     histchunk_pack(&ch, rows, buf);
 *     ...
 *     ch.data = blob;                                       // read back: header + blob
 *     if (histchunk_check(&ch, blob_bytes, err) == 0)
 *         histchunk_get(&ch, i, &row);
 */
#ifndef ND_HISTCHUNK_H
#define ND_HISTCHUNK_H

#include <stdint.h>

#include "err.h"
#include "store.h"

/* Records per chunk at most: a page of GET /history reads whole chunks. */
#define HISTCHUNK_MAX 4096

typedef struct histchunk {
    int64_t first, last, n;      /* steps of the first and last records; records, >= 1 */
    int64_t stride;              /* steps are first + i*stride; 0: each record holds its step */
    int64_t at_ms;               /* time of the append, ms since 1970-01-01 UTC */
    int lr_shared;               /* 1: every record's learning rate is `lr` */
    int val;                     /* validation values per record: 0, 1 (loss), 2 (+ accuracy) */
    double lr;
    const unsigned char *data;   /* the packed records: borrowed */
    char at[STORE_TIME_MAX];     /* at_ms as text, set by histchunk_check() */
} histchunk_t;

/* Bytes of one record of `ch`. */
int64_t histchunk_record_size(const histchunk_t *ch);

/* Bytes of the packed records of `ch`. */
int64_t histchunk_bytes(const histchunk_t *ch);

/* The header of a chunk holding rows[0..n-1] (n >= 1, steps ascending), all of time `at_ms`.
 * `ch->data` is NULL. */
void histchunk_plan(const store_history_row_t *rows, int64_t n, int64_t at_ms, histchunk_t *ch);

/* Pack rows[0..ch->n-1] as `ch` (from histchunk_plan) describes into `buf` of
 * histchunk_bytes(ch) bytes. */
void histchunk_pack(const histchunk_t *ch, const store_history_row_t *rows, unsigned char *buf);

/* Check a chunk read back (header fields and `data`) against its blob's size `bytes`, and set
 * `ch->at`. ERR_DB when they disagree or `val` is not 0, 1 or 2. */
int histchunk_check(histchunk_t *ch, int64_t bytes, err_t *err);

/* Record i (0 <= i < n) of a checked chunk; validation values it does not carry are NaN. */
void histchunk_get(const histchunk_t *ch, int64_t i, store_history_row_t *r);

/* The step of record i of a checked chunk. */
int64_t histchunk_step(const histchunk_t *ch, int64_t i);

/* Milliseconds since 1970 UTC as "2026-11-28T04:36:37.123Z", the format of store_now(). */
void histchunk_time_text(int64_t ms, char buf[STORE_TIME_MAX]);

/* Inverse of histchunk_time_text(); the milliseconds may be absent. -1 when `text` is not
 * such a time. */
int histchunk_time_ms(const char *text, int64_t *ms);

#endif /* ND_HISTCHUNK_H */
