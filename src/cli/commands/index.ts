// Every CLI command, in the order `pgkeep --help` lists them.

import type { Command } from '../command.js'
import { checkCommand } from './check.js'
import { initCommand } from './init.js'
import { verifyCommand } from './verify.js'

export const commands: readonly Command[] = [checkCommand, initCommand, verifyCommand]
