// Lint for the TypeScript: typescript-eslint's recommended rules, with the few the codebase
// deliberately departs from turned off and said why. Layering is checked separately by
// dependency-cruiser (.dependency-cruiser.cjs).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', '.output/**', 'node_modules/**', 'test/fuzz/**/corpus/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.cjs', '**/*.mjs'],
    languageOptions: { globals: globals.node },
    rules: {
      // The addon is loaded with require() on purpose: its path is computed at run time.
      '@typescript-eslint/no-require-imports': 'off',
      // `_`-prefixed parameters and destructured leftovers are intentional.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Empty catch blocks carry a comment saying why the error is of no interest.
      'no-empty': ['error', { allowEmptyCatch: true }],
      // `let x; f(() => x); x = ...`: a closure handed out before the value exists.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
);
