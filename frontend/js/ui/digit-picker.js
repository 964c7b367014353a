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
