// Number keys pick classes: digits typed within `windowMs` of each other form one number, so with 34 classes
// "2" then "7" picks class 27; "0" alone picks class 10. A combined number that is not a class restarts from the
// newest digit. Pure; the annotate view feeds it key presses with their time.

export class DigitPicker {
  constructor(numClasses, windowMs = 700) {
    this.numClasses = numClasses;
    this.windowMs = windowMs;
    this.buffer = '';
    this.lastAt = -Infinity;
  }

  /** @returns {number | null} the class to select, or null when the digits name none */
  push(digit, now) {
    const combined = now - this.lastAt <= this.windowMs ? this.buffer + digit : digit;
    this.lastAt = now;
    const asClass = (text) => {
      const value = text === '0' ? 10 : Number(text);
      return value >= 1 && value < this.numClasses ? value : null;
    };
    const picked = combined.length > 1 ? asClass(combined) : null;
    if (picked !== null) {
      this.buffer = combined;
      return picked;
    }
    this.buffer = digit;
    return asClass(digit);
  }
}

/**
 * The help line for picking classes by number with `numClasses` classes (class 0, the background, has no key):
 * 18 classes → '1–9 / 0: pick class by number (two digits quickly: 11–17)'.
 */
export function digitHelp(numClasses) {
  const last = numClasses - 1;
  if (last < 1) return 'Number keys pick classes (this schema has only the background)';
  const single = last === 1 ? '1' : `1–${Math.min(9, last)}${last >= 10 ? ' / 0' : ''}`;
  const double = last >= 11 ? ` (two digits quickly: 11${last > 11 ? `–${last}` : ''})` : '';
  return `${single}: pick class by number${double}`;
}
