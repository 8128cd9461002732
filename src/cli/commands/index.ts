// Every CLI command, in the order `pgkeep --help` lists them.

import type { Command } from '../command.js'
import { backupCommand } from './backup.js'
import { checkCommand } from './check.js'
import { configShowCommand } from './config-show.js'
import { gcCommand } from './gc.js'
import { copyCommand } from './copy.js'
import { demoCommand } from './demo.js'
import { drillCommand } from './drill.js'
import { expireCommand } from './expire.js'
import { forgetCommand } from './forget.js'
import { infoCommand } from './info.js'
import { initCommand } from './init.js'
import { keyAddCommand } from './key-add.js'
import { keyListCommand } from './key-list.js'
import { keyPasswdCommand } from './key-passwd.js'
import { keyRemoveCommand } from './key-remove.js'
import { metricsCommand } from './metrics.js'
import { policyClearCommand, policySetCommand, policyShowCommand } from './policy.js'
import { restoreCommand } from './restore.js'
import { unlockCommand } from './unlock.js'
import { verifyCommand } from './verify.js'
import { walGetCommand } from './wal-get.js'
import { walPushCommand } from './wal-push.js'
import { walStreamCommand } from './wal-stream.js'

export const commands: readonly Command[] = [
  demoCommand,
  checkCommand,
  initCommand,
  backupCommand,
  restoreCommand,
  drillCommand,
  infoCommand,
  verifyCommand,
  expireCommand,
  forgetCommand,
  policyShowCommand,
  policySetCommand,
  policyClearCommand,
  gcCommand,
  metricsCommand,
  walStreamCommand,
  walPushCommand,
  walGetCommand,
  copyCommand,
  keyListCommand,
  keyAddCommand,
  keyRemoveCommand,
  keyPasswdCommand,
  unlockCommand,
  configShowCommand,
]
