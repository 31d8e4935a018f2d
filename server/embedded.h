/* server/embedded.h -- files compiled into the binary by cmake/embed.cmake: schema migrations
 * (schema/<dialect>/NNN_name.sql, in name order), the dashboard (server/web/) and docs/openapi.json. */
#ifndef ND_EMBEDDED_H
#define ND_EMBEDDED_H

#include <stddef.h>

typedef struct embedded_file {
    const char *path;           /* relative to the source root, e.g. "schema/sqlite/001_init.sql" */
    const unsigned char *data;  /* NUL-terminated for convenience; size excludes the NUL */
    size_t size;
} embedded_file_t;

/* Sorted by path, terminated by an entry whose path is NULL. */
extern const embedded_file_t embedded_files[];

#endif /* ND_EMBEDDED_H */
