// Every CLI command, in the order `pgkeep --help` lists them: the words that select it and its one-line summary,
// and how to load it. A command's module (and everything it imports) is loaded only when that command runs or shows
// its usage: a process started for one command (an archive_command or restore_command runs once per WAL file) does
// not pay for loading all the others.

import type { Command, CommandListing } from '../command.js'

export const commands: readonly CommandListing[] = [
  {
    path: ['demo'],
    summary: 'a first run: an embedded PostgreSQL, WAL streaming, backups, a drill and a point-in-time restore',
    load: async (): Promise<Command> => (await import('./demo.js')).demoCommand,
  },
  {
    path: ['check'],
    summary: "check that a server can be backed up, or that a repository's backups and WAL are recent",
    load: async (): Promise<Command> => (await import('./check.js')).checkCommand,
  },
  {
    path: ['init'],
    summary: 'create a repository in a directory or an S3 bucket',
    load: async (): Promise<Command> => (await import('./init.js')).initCommand,
  },
  {
    path: ['backup'],
    summary: 'take a full or incremental backup, with its WAL, into the repository',
    load: async (): Promise<Command> => (await import('./backup.js')).backupCommand,
  },
  {
    path: ['restore'],
    summary: 'restore a backup into a data directory, to any point in time',
    load: async (): Promise<Command> => (await import('./restore.js')).restoreCommand,
  },
  {
    path: ['drill'],
    summary: 'restore a backup into a scratch directory, start it, check it, measure the recovery time',
    load: async (): Promise<Command> => (await import('./drill.js')).drillCommand,
  },
  {
    path: ['info'],
    summary: 'list the clusters, backups, WAL, recoverable window and retention of a repository',
    load: async (): Promise<Command> => (await import('./info.js')).infoCommand,
  },
  {
    path: ['verify'],
    summary: 'check a repository for damage (structure, and data on request)',
    load: async (): Promise<Command> => (await import('./verify.js')).verifyCommand,
  },
  {
    path: ['expire'],
    summary: 'remove the backups and WAL a retention policy does not keep (records only; gc frees the space)',
    load: async (): Promise<Command> => (await import('./expire.js')).expireCommand,
  },
  {
    path: ['forget'],
    summary: 'remove chosen backups (records only; gc frees the space)',
    load: async (): Promise<Command> => (await import('./forget.js')).forgetCommand,
  },
  {
    path: ['policy', 'show'],
    summary: 'show the retention policies stored in the repository',
    load: async (): Promise<Command> => (await import('./policy.js')).policyShowCommand,
  },
  {
    path: ['policy', 'set'],
    summary: 'store a retention policy for a cluster, or the default one',
    load: async (): Promise<Command> => (await import('./policy.js')).policySetCommand,
  },
  {
    path: ['policy', 'clear'],
    summary: 'remove a stored retention policy',
    load: async (): Promise<Command> => (await import('./policy.js')).policyClearCommand,
  },
  {
    path: ['gc'],
    summary: 'free the space of blobs no backup or WAL references any more',
    load: async (): Promise<Command> => (await import('./gc.js')).gcCommand,
  },
  {
    path: ['metrics'],
    summary: "print a repository's state as Prometheus metrics",
    load: async (): Promise<Command> => (await import('./metrics.js')).metricsCommand,
  },
  {
    path: ['wal', 'stream'],
    summary: 'stream WAL from a replication slot into the repository, continuously',
    load: async (): Promise<Command> => (await import('./wal-stream.js')).walStreamCommand,
  },
  {
    path: ['wal', 'push'],
    summary: 'store one WAL file in the repository (archive_command)',
    load: async (): Promise<Command> => (await import('./wal-push.js')).walPushCommand,
  },
  {
    path: ['wal', 'get'],
    summary: 'write one WAL file from the repository (restore_command), prefetching ahead',
    load: async (): Promise<Command> => (await import('./wal-get.js')).walGetCommand,
  },
  {
    path: ['copy'],
    summary: 'copy backups with their WAL to a second repository (3-2-1 copies)',
    load: async (): Promise<Command> => (await import('./copy.js')).copyCommand,
  },
  {
    path: ['key', 'list'],
    summary: 'list the keys (passphrases) of an encrypted repository',
    load: async (): Promise<Command> => (await import('./key-list.js')).keyListCommand,
  },
  {
    path: ['key', 'add'],
    summary: 'add a passphrase to an encrypted repository',
    load: async (): Promise<Command> => (await import('./key-add.js')).keyAddCommand,
  },
  {
    path: ['key', 'remove'],
    summary: 'remove a passphrase (key) from an encrypted repository',
    load: async (): Promise<Command> => (await import('./key-remove.js')).keyRemoveCommand,
  },
  {
    path: ['key', 'passwd'],
    summary: 'change the passphrase of an encrypted repository',
    load: async (): Promise<Command> => (await import('./key-passwd.js')).keyPasswdCommand,
  },
  {
    path: ['unlock'],
    summary: 'list the repository locks, and remove stale ones (--remove-stale)',
    load: async (): Promise<Command> => (await import('./unlock.js')).unlockCommand,
  },
  {
    path: ['config', 'show'],
    summary: 'show the settings in effect (config file, environment, options) and where each came from',
    load: async (): Promise<Command> => (await import('./config-show.js')).configShowCommand,
  },
]
