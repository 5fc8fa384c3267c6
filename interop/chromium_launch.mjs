// How every browser test here starts Debian's Chromium (../shared/RECIPES.md): headless, no
// sandbox (root), and none of the background networking this closed network refuses.
import { chromium } from 'playwright-core';

export { chromium };

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export const launchOptions = (extraArgs = []) => ({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [...CHROMIUM_ARGS, ...extraArgs],
  timeout: 30000,
});
