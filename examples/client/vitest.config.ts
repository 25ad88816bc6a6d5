import { defineConfig } from 'vitest/config';

// The unit tests. test/package/ runs under node's test runner (npm run test:package).
export default defineConfig({ test: { include: ['test/*.test.ts'] } });
